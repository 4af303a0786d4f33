"""GPU parity: ``gpu_kernels`` moments / casa_moments against the ``cpu_fallback`` reference.

Runs on a CUDA device (``pytest -m gpu --require-gpu``), else on the CPU emulator of
``tests/gpu_emulation``; CuPy is imported inside the tests so collection works without it.
Each check compares dtype, shape, NaN positions and
values within ``app.compute.contract.PARITY_TOLERANCE[module]``. Needs only NumPy, CuPy and
pytest.

Both moment kernels take float64 sums for orders 1-5, so those agree to the parity tolerance on
every pixel, noise included. The one exception is order 0 requested without orders 1-5: the CPU
kernel sums it in float32 per chunk of 32 channels (float64 across chunks), which is exact to
float32 rounding of ``sum |I| dv`` rather than of ``|sum I dv|``; on noise the two differ, so
that case has its own test with that allowance (pixels whose sums cancel badly are recomputed
exactly on the CPU).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.compute.contract import PARITY_TOLERANCE
from cpu_fallback import casa_moments as cpu_casa
from cpu_fallback import moments as cpu_mom
from gpu_kernels import casa_moments as gpu_casa
from gpu_kernels import moments as gpu_mom

pytestmark = pytest.mark.gpu

ORDERS = (0, 1, 2, 3, 4, 5, 6, 8, 10)
CASA_ALL = tuple(range(-1, 12))
CASA_NO4 = tuple(m for m in CASA_ALL if m != 4)


def _random_cube(shape: tuple[int, int, int] = (40, 29, 37), seed: int = 4) -> np.ndarray:
    """Noise with scattered NaN/inf, a blank spectrum, a zero spectrum and a one-voxel spectrum."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(0.0, 1.0, shape).astype(np.float32)
    cube[rng.random(shape) < 0.05] = np.nan
    cube[2, 3, 4], cube[3, 4, 5] = np.inf, -np.inf
    cube[:, 6, 7] = np.nan
    cube[:, 8, 9] = 0.0
    cube[:, 10, 11] = np.nan
    cube[12, 10, 11] = 1.5
    return cube


def _line_cube(shape: tuple[int, int, int] = (64, 23, 31), seed: int = 5):
    """Gaussian lines at ~10,000 km/s (5 km/s channels) with noise and blanks; coords, widths."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    v = 10_000.0 + 5.0 * np.arange(nz)
    yy, xx = np.mgrid[:ny, :nx]
    centre = v.mean() + 40.0 * np.sin(xx / 4.0)
    sigma = 8.0 + yy
    line = np.exp(-0.5 * ((v[:, None, None] - centre) / sigma) ** 2)
    line += 0.3 * np.exp(-0.5 * ((v[:, None, None] - centre - 35.0) / 10.0) ** 2)  # skewed
    cube = (line + rng.normal(0.0, 0.02, shape)).astype(np.float32)
    cube[:, 0, 0] = np.nan
    cube[rng.random(shape) < 0.02] = np.nan
    return cube, v, np.full(nz, 5.0)


def _assert_maps(gpu: dict, cpu: dict, module: str) -> None:
    import cupy as cp

    assert set(gpu) == set(cpu)
    tol = PARITY_TOLERANCE[module]
    for k, ref in cpu.items():
        assert isinstance(gpu[k], cp.ndarray)
        got = cp.asnumpy(gpu[k])
        assert got.dtype == np.float32 and ref.dtype == np.float32, k
        assert got.shape == ref.shape, k
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{module} {k}: NaN positions")
        np.testing.assert_allclose(got, ref, rtol=tol.rtol, atol=tol.atol, equal_nan=True, err_msg=f"{module} {k}")


@pytest.mark.parametrize("threshold", [None, 0.1])
@pytest.mark.parametrize("kind", ["random", "line"])
def test_moment_maps_parity(kind: str, threshold: float | None) -> None:
    import cupy as cp

    if kind == "random":
        cube = _random_cube()
        v, w = np.linspace(-120.0, 80.0, cube.shape[0]), np.full(cube.shape[0], 200.0 / 39)
    else:
        cube, v, w = _line_cube()
    cpu = cpu_mom.moment_maps(cube, v, w, orders=ORDERS, threshold=threshold)
    gpu = gpu_mom.moment_maps(cp.asarray(cube), cp.asarray(v), cp.asarray(w), orders=ORDERS, threshold=threshold)
    _assert_maps(gpu, cpu, "moments")


def test_moment_maps_parity_irregular_axis_and_zero_widths() -> None:
    import cupy as cp

    cube = _random_cube(seed=9)
    nz = cube.shape[0]
    v = np.cumsum(np.linspace(2.0, 0.5, nz))[::-1].copy()  # decreasing, non-uniform
    w = np.abs(np.gradient(v))
    w[::5] = 0.0
    cpu = cpu_mom.moment_maps(cube, v, w, orders=ORDERS)
    gpu = gpu_mom.moment_maps(cp.asarray(cube), v, w, orders=ORDERS)  # host axes are fine too
    _assert_maps(gpu, cpu, "moments")


@pytest.mark.parametrize("orders", [(0,), (1,), (2,), (8, 10), (6,), (3, 5)])
def test_moment_maps_order_subsets(orders: tuple[int, ...]) -> None:
    import cupy as cp

    cube, v, w = _line_cube()
    cpu = cpu_mom.moment_maps(cube, v, w, orders=orders, threshold=0.05)
    gpu = gpu_mom.moment_maps(cp.asarray(cube), cp.asarray(v), cp.asarray(w), orders=orders, threshold=0.05)
    _assert_maps(gpu, cpu, "moments")


def test_moment_maps_parity_order0_alone_on_noise() -> None:
    """Order 0 alone (float32 sums on the CPU, module docstring) on pure noise, no threshold:
    within the parity tolerance plus float32 rounding of ``sum |I| dv`` (8 eps32 of it)."""
    import cupy as cp

    for seed in (13, 14):
        cube = _random_cube(seed=seed)
        nz = cube.shape[0]
        v, w = np.linspace(-120.0, 80.0, nz), np.full(nz, 200.0 / 39)
        ref = cpu_mom.moment_maps(cube, v, w, orders=(0,))[0]
        got = cp.asnumpy(gpu_mom.moment_maps(cp.asarray(cube), cp.asarray(v), cp.asarray(w), orders=(0,))[0])
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg="NaN positions")
        x = np.where(np.isfinite(cube), cube, 0.0).astype(np.float64)
        abs_sum = (np.abs(x) * w[:, None, None]).sum(axis=0)
        tol = PARITY_TOLERANCE["moments"]
        allowed = tol.rtol * np.abs(ref) + tol.atol + 8 * np.finfo(np.float32).eps * abs_sum
        fin = np.isfinite(ref)
        assert np.all(np.abs(got[fin] - ref[fin]) <= allowed[fin]), "order 0 beyond float32 rounding of sum |I| dv"


def test_moment_maps_y_slab_views_equal_whole() -> None:
    """A y-slab view of a resident cube (strided rows) gives exactly the rows of the whole map."""
    import cupy as cp

    cube, v, w = _line_cube()
    dev = cp.asarray(cube)
    whole = gpu_mom.moment_maps(dev, v, w, orders=ORDERS)
    part = gpu_mom.moment_maps(dev[5:17], v[5:17], w[5:17], orders=ORDERS)  # channel range
    _assert_maps(part, cpu_mom.moment_maps(cube[5:17], v[5:17], w[5:17], orders=ORDERS), "moments")
    for a, b in ((0, 7), (7, 8), (8, cube.shape[1])):
        rows = gpu_mom.moment_maps(dev[:, a:b], v, w, orders=ORDERS)
        for k in ORDERS:
            np.testing.assert_array_equal(cp.asnumpy(rows[k]), cp.asnumpy(whole[k][a:b]))


def test_moment_maps_rejects_bad_layouts() -> None:
    import cupy as cp

    cube, v, w = _line_cube((8, 4, 6))
    with pytest.raises(TypeError):
        gpu_mom.moment_maps(cp.asarray(cube, dtype=cp.float64), v, w, orders=(0,))
    with pytest.raises(ValueError):
        gpu_mom.moment_maps(cp.asarray(cube)[:, :, ::2], v, w, orders=(0,))
    with pytest.raises(ValueError):
        gpu_mom.moment_maps(cp.asarray(cube), v, w, orders=(7,))


CASA_CASES = [
    ({}, CASA_NO4),
    ({"include": [0.05, 100.0]}, CASA_ALL),
    ({"include": 0.5}, CASA_NO4),
    ({"exclude": [-0.05, 0.05]}, CASA_NO4),
    ({"exclude": [0.0, 0.05]}, CASA_ALL),
    ({"include": -1}, CASA_NO4),
]


@pytest.mark.parametrize(("kwargs", "moments"), CASA_CASES)
@pytest.mark.parametrize("kind", ["random", "line"])
def test_casa_moment_maps_parity(kind: str, kwargs: dict, moments: tuple[int, ...]) -> None:
    import cupy as cp

    if kind == "random":
        cube = _random_cube()
        v, w = np.linspace(1613.1, 1329.7, cube.shape[0]), np.full(cube.shape[0], 5.15)
    else:
        cube, v, w = _line_cube()
    cpu = cpu_casa.casa_moment_maps(cube, v, w, moments=moments, **kwargs)
    gpu = gpu_casa.casa_moment_maps(cp.asarray(cube), cp.asarray(v), cp.asarray(w), moments=moments, **kwargs)
    _assert_maps(gpu, cpu, "casa_moments")


def test_casa_moment_maps_long_spectra_and_views() -> None:
    """n > 100 (median without the mean of the middle pair), non-uniform widths, y-slab views."""
    import cupy as cp

    rng = np.random.default_rng(12)
    cube = rng.normal(0.0, 1.0, (130, 9, 13)).astype(np.float32)
    cube[:, 2, 3] = np.nan
    cube[rng.random(cube.shape) < 0.01] = np.nan
    v = np.linspace(-300.0, 300.0, 130) ** 3 / 9e4  # non-linear axis
    w = np.abs(np.gradient(v))
    dev = cp.asarray(cube)
    cpu = cpu_casa.casa_moment_maps(cube, v, w, moments=CASA_NO4)
    _assert_maps(gpu_casa.casa_moment_maps(dev, v, w, moments=CASA_NO4), cpu, "casa_moments")
    part = gpu_casa.casa_moment_maps(dev[:, 3:7], v, w, moments=CASA_NO4)
    _assert_maps(part, {k: m[3:7] for k, m in cpu.items()}, "casa_moments")
    with pytest.raises(ValueError, match="median coordinate"):
        gpu_casa.casa_moment_maps(dev, v, w, moments=(4,))

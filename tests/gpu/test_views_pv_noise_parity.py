"""GPU parity: ``gpu_kernels`` cube_views / noise / pv against the ``cpu_fallback`` reference.

Runs on a CUDA device (``pytest -m gpu --require-gpu``), else on the CPU emulator of
``tests/gpu_emulation``; CuPy is imported inside the tests so collection works without it.
Each check compares dtype, shape, NaN positions and
values within ``app.compute.contract.PARITY_TOLERANCE[module]``. Needs only NumPy, CuPy and
pytest (the path geometry is built here, not through ``app.services``).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.compute.contract import PARITY_TOLERANCE
from cpu_fallback import cube_views as cpu_views
from cpu_fallback import noise as cpu_noise
from cpu_fallback import pv as cpu_pv
from gpu_kernels import cube_views as gpu_views
from gpu_kernels import noise as gpu_noise
from gpu_kernels import pv as gpu_pv

pytestmark = pytest.mark.gpu


def _cube(shape: tuple[int, int, int] = (24, 33, 47), seed: int = 3) -> np.ndarray:
    """float32 test cube with scattered NaN/inf, a blank channel and a one-pixel channel."""
    rng = np.random.default_rng(seed)
    cube = rng.normal(0.0, 0.1, shape).astype(np.float32)
    cube[6:9, 10:20, 12:30] += 5.0
    cube[rng.random(shape) < 0.1] = np.nan
    cube[2, 3, 4] = np.inf
    cube[3, 4, 5] = -np.inf
    cube[5] = np.nan
    cube[7] = np.nan
    cube[7, 1, 1] = 2.0
    cube[9] = 0.0  # exact zeros for zero_as_blank
    cube[9, :5, :] = 1.0
    return cube


def _assert_parity(gpu: object, cpu: np.ndarray, module: str) -> None:
    import cupy as cp

    assert isinstance(gpu, cp.ndarray)
    got = cp.asnumpy(gpu)
    assert got.dtype == cpu.dtype
    assert got.shape == cpu.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(cpu))
    tol = PARITY_TOLERANCE[module]
    np.testing.assert_allclose(got, cpu, rtol=tol.rtol, atol=tol.atol, equal_nan=True)


# -- cube_views ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 50])
def test_finite_range_parity(chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    import cupy as cp

    if chunk is not None:
        monkeypatch.setattr(gpu_views, "_CHUNK_ELEMENTS", chunk)
    cube = _cube()
    blank = np.full((3, 4), np.nan, dtype=np.float32)
    for a in (cube, cube[5], cube[0], blank, np.zeros((0, 3), np.float32)):
        got = gpu_views.finite_range(cp.asarray(a))
        want = cpu_views.finite_range(a)
        assert all(type(v) is float for v in got)
        assert got == want  # min/max are exact: PARITY_TOLERANCE["cube_views"] has rtol 0


@pytest.mark.parametrize("step", [1, 2, 3, 5, 64])
def test_strided_preview_parity(step: int) -> None:
    import cupy as cp

    cube = _cube()
    got = gpu_views.strided_preview(cp.asarray(cube), step=step)
    assert got.flags.c_contiguous
    _assert_parity(got, cpu_views.strided_preview(cube, step=step), "cube_views")
    f64 = cube.astype(np.float64)
    _assert_parity(
        gpu_views.strided_preview(cp.asarray(f64), step=step),
        cpu_views.strided_preview(f64, step=step),
        "cube_views",
    )


# -- noise --------------------------------------------------------------------------------


@pytest.mark.parametrize("zero_as_blank", [False, True])
@pytest.mark.parametrize("chunk", [None, 1, 3 * 33 * 47])
def test_channel_mad_parity(zero_as_blank: bool, chunk: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    import cupy as cp

    if chunk is not None:
        monkeypatch.setattr(gpu_noise, "_CHUNK_ELEMENTS", chunk)
    cube = _cube()
    got = gpu_noise.channel_mad(cp.asarray(cube), zero_as_blank=zero_as_blank)
    want = cpu_noise.channel_mad(cube, zero_as_blank=zero_as_blank)
    assert len(got) == 2
    for g, w in zip(got, want, strict=True):
        _assert_parity(g, w, "noise")
    assert np.isnan(want[0][[5, 7]]).all()


def test_channel_mad_parity_on_a_cropped_region() -> None:
    import cupy as cp

    cube = _cube((40, 64, 64), seed=8)
    crop = cube[3:31, 10:50, 5:25]  # the service passes a cropped (non-contiguous) view
    got = gpu_noise.channel_mad(cp.asarray(cube)[3:31, 10:50, 5:25])
    for g, w in zip(got, cpu_noise.channel_mad(crop), strict=True):
        _assert_parity(g, w, "noise")


# -- pv -----------------------------------------------------------------------------------


def _path(ny: int, nx: int, ns: int, seed: int) -> tuple[np.ndarray, ...]:
    """Random samples (some at exact half-pixel ties, some off the image) and unit normals."""
    rng = np.random.default_rng(seed)
    sx = rng.uniform(-3.0, nx + 2.0, ns)
    sy = rng.uniform(-3.0, ny + 2.0, ns)
    sx[: ns // 4] = np.round(sx[: ns // 4]) + 0.5  # ties for the rounding rule
    sy[ns // 4 : ns // 2] = np.round(sy[ns // 4 : ns // 2]) - 0.5
    ang = rng.uniform(0.0, 2.0 * np.pi, ns)
    ang[:8] = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]) * np.pi / 2  # axis-aligned normals
    return sx, sy, np.cos(ang), np.sin(ang)


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_pv_box_sample_parity(width: int) -> None:
    import cupy as cp

    cube = _cube()
    args = _path(cube.shape[1], cube.shape[2], 301, seed=width)
    want = cpu_pv.pv_box_sample(cube, *args, width_pixels=width)
    got = gpu_pv.pv_box_sample(cp.asarray(cube), *(cp.asarray(a) for a in args), width_pixels=width)
    _assert_parity(got, want, "pv")
    host_args = gpu_pv.pv_box_sample(cp.asarray(cube), *args, width_pixels=width)  # host samples
    _assert_parity(host_args, want, "pv")


def test_pv_box_sample_parity_along_a_polyline() -> None:
    import cupy as cp

    cube = _cube((32, 64, 64), seed=5)
    # the REF-PY path [[10, 32], [54, 32]] sampled at one-pixel steps, normal (0, 1)
    sx = np.arange(10.0, 55.0)
    sy = np.full(sx.size, 32.0)
    nx_, ny_ = np.zeros(sx.size), np.ones(sx.size)
    want = cpu_pv.pv_box_sample(cube, sx, sy, nx_, ny_, width_pixels=3)
    got = gpu_pv.pv_box_sample(cp.asarray(cube), sx, sy, nx_, ny_, width_pixels=3)
    assert got.shape == (32, 45)
    _assert_parity(got, want, "pv")


def test_pv_box_sample_empty_and_contiguity_check() -> None:
    import cupy as cp

    cube = cp.asarray(_cube())
    e = cp.zeros(0)
    got = gpu_pv.pv_box_sample(cube, e, e, e, e, width_pixels=3)
    assert got.shape == (cube.shape[0], 0) and got.dtype == cp.float32
    one = cp.zeros(1)
    with pytest.raises(ValueError, match="C-contiguous"):
        gpu_pv.pv_box_sample(cube[:, :, ::2], one, one, one, one, width_pixels=1)
    with pytest.raises(ValueError, match="C-contiguous float32"):
        gpu_pv.pv_box_sample(cube.astype(cp.float64), one, one, one, one, width_pixels=1)

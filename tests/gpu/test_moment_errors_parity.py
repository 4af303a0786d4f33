"""GPU parity of ``moment_errors`` (issue 17 item 2) and of multi-order moment requests on the device.

Runs on a CUDA device (``pytest -m gpu --require-gpu``), else on the CPU emulator of
``tests/gpu_emulation``; CuPy is imported inside the tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.compute.contract import PARITY_TOLERANCE
from cpu_fallback import moment_errors as cpu_err
from gpu_kernels import moment_errors as gpu_err
from gpu_kernels import moments as gpu_mom

pytestmark = pytest.mark.gpu


def _cube(seed: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    nz, ny, nx = 36, 13, 17
    v = 1500.0 + 5.0 * np.arange(nz)
    yy, xx = np.mgrid[:ny, :nx]
    line = 2.0 * np.exp(-0.5 * ((v[:, None, None] - 1580.0 - 3.0 * xx) / (10.0 + yy)) ** 2)
    cube = (line + rng.normal(0.0, 0.1, (nz, ny, nx))).astype(np.float32)
    cube[rng.random(cube.shape) < 0.03] = np.nan
    cube[:, 1, 2] = np.nan
    cube[:, 3, 4] = 0.0
    return cube, v, np.full(nz, 5.0)


@pytest.mark.parametrize("options", [
    {}, {"threshold": 0.2}, {"include": (0.1, 50.0), "dispersion": True}, {"exclude": (-0.3, 0.3)},
])
@pytest.mark.parametrize("per_channel", [False, True])
def test_moment_sigma_maps_parity(options: dict, per_channel: bool) -> None:
    import cupy as cp

    cube, v, w = _cube()
    noise = np.linspace(0.05, 0.2, cube.shape[0]) if per_channel else 0.1
    cpu = cpu_err.moment_sigma_maps(cube, v, w, noise, **options)
    gpu = gpu_err.moment_sigma_maps(cp.asarray(cube), cp.asarray(v), cp.asarray(w),
                                    cp.asarray(noise) if per_channel else noise, **options)
    tol = PARITY_TOLERANCE["moment_errors"]
    assert set(gpu) == set(cpu) == {0, 1, 2}
    for k, ref in cpu.items():
        assert isinstance(gpu[k], cp.ndarray)
        got = cp.asnumpy(gpu[k])
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"order {k}: NaN positions")
        np.testing.assert_allclose(got, ref, rtol=tol.rtol, atol=tol.atol, equal_nan=True, err_msg=f"order {k}")


@pytest.mark.parametrize("orders", [(0, 1, 2, 8), (0, 6, 10), (3, 4, 5, 2), (0, 1, 2, 3, 4, 5, 6, 8, 10)])
def test_gpu_multi_order_sweep_equals_single_orders_bit_for_bit(orders: tuple[int, ...]) -> None:
    """On the device one sweep serves every order (app/services/moment_multi.kernel_groups)."""
    import cupy as cp

    cube, v, w = _cube(seed=9)
    dev = cp.asarray(cube)
    multi = gpu_mom.moment_maps(dev, v, w, orders=orders, threshold=0.05)
    for k in orders:
        single = gpu_mom.moment_maps(dev, v, w, orders=(k,), threshold=0.05)[k]
        np.testing.assert_array_equal(cp.asnumpy(multi[k]), cp.asnumpy(single), err_msg=f"order {k}")

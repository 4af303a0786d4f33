"""GPU parity of the issue-11 rules: line-width acceptance and baseline fallback orders.

Both trees run the same :mod:`kernel_common` code for the rules; these tests check the glue on a
real device (NaN positions identical, values within the module tolerance, outcome counts equal).
NumPy, CuPy and pytest only.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.compute.contract import PARITY_TOLERANCE
from cpu_fallback import baseline as cpu_bl
from cpu_fallback import linewidth as cpu_lw

pytestmark = pytest.mark.gpu


def test_linewidth_acceptance_parity() -> None:
    import cupy as cp

    from gpu_kernels import linewidth as gpu

    rng = np.random.default_rng(8)
    nz, ny, nx = 46, 40, 50
    v = 1600.0 - 5.15 * np.arange(nz)
    amp = np.where(rng.random((ny, nx)) < 0.3, rng.uniform(0.5, 8.0, (ny, nx)), 0.0)  # 70 % pure noise
    cube = amp * np.exp(-0.5 * ((v[:, None, None] - 1480.0) / 15.0) ** 2) + rng.normal(0, 1.0, (nz, ny, nx))
    cube = cube.astype(np.float32)
    ref, ref_ew = cpu_lw.gaussian_linewidth(cube, v, np.full(nz, 5.15))
    got, got_ew = gpu.gaussian_linewidth(cp.asarray(cube), v, np.full(nz, 5.15))
    got, got_ew = cp.asnumpy(got), cp.asnumpy(got_ew)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    tol = PARITY_TOLERANCE["linewidth"]
    np.testing.assert_allclose(got, ref, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
    np.testing.assert_allclose(got_ew, ref_ew, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
    assert np.isfinite(ref[amp == 0]).mean() <= 0.01


def test_baseline_fallback_parity() -> None:
    import cupy as cp

    from gpu_kernels import baseline as gpu

    rng = np.random.default_rng(9)
    nz, ny, nx = 56, 20, 30
    z = np.arange(nz, dtype=np.float64)[:, None, None]
    cube = (0.01 * rng.normal(size=(1, ny, nx)) * z + rng.normal(0, 0.002, (nz, ny, nx))).astype(np.float32)
    cube[45:, :5] = np.nan  # edge pixels: usable line-free only 0..4 -> order 0
    cube[:, 5, :4] = np.nan  # blank: unchanged
    cube[[0, 1, 2, 3, 51, 52, 53, 54], 6, 4] = np.nan  # 2 usable samples: order 0
    lf = np.r_[0:5, 51:56]
    for kw in ({"order": 1}, {"order": 3}, {"method": "median"}):
        rc, pc = cpu_bl.subtract_baseline(cube, lf, **kw)
        rg, pg = gpu.subtract_baseline(cp.asarray(cube), lf, **kw)
        rg, pg = cp.asnumpy(rg), cp.asnumpy(pg)
        np.testing.assert_array_equal(np.isnan(rg), np.isnan(rc))
        np.testing.assert_allclose(rg, rc, rtol=1e-6, atol=1e-6, equal_nan=True)
        np.testing.assert_array_equal(pg[3:], pc[3:])  # outcome counts
        np.testing.assert_allclose(pg[:3], pc[:3], rtol=1e-9)

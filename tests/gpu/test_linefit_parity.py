"""GPU parity for the Gaussian line-fit maps (``gpu_kernels.linefit`` against ``cpu_fallback.linefit``).

Both trees share the one-component fit's arithmetic (the line-width kernel) and the error /
two-component array code (:mod:`kernel_common.gaussfit`): same dtype, shapes and NaN positions,
values within ``PARITY``. CuPy is imported inside the tests (the conftest runs ``gpu`` tests on
the CPU emulator where there is no CUDA device).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback import linefit as cpu_lf

pytestmark = pytest.mark.gpu


def _cube(dtype=np.float32, seed: int = 3):
    rng = np.random.default_rng(seed)
    nz, ny, nx = 72, 9, 13
    v = np.linspace(-250.0, 250.0, nz)
    yy, xx = np.mgrid[0:ny, 0:nx]
    a1 = rng.uniform(0.0, 1.5, (ny, nx))  # includes pixels under the SNR cut
    a2 = np.where(xx % 2 == 0, rng.uniform(0.3, 1.0, (ny, nx)), 0.0)  # a second line in half the pixels
    cube = (a1 * np.exp(-0.5 * ((v[:, None, None] + 40.0 - 3 * yy) / 18.0) ** 2)
            + a2 * np.exp(-0.5 * ((v[:, None, None] - 60.0 - 2 * xx) / 12.0) ** 2)
            + rng.normal(0, 0.05, (nz, ny, nx)))
    cube[rng.random(cube.shape) < 0.02] = np.nan
    cube[:, 0, :2] = np.nan
    return cube.astype(dtype), v, np.full(nz, v[1] - v[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [{"components": 1}, {"components": 2}, {"components": 2, "threshold": -0.05}])
def test_gaussian_linefit_parity(dtype, kw) -> None:
    import cupy as cp

    from gpu_kernels import linefit as gpu

    cube, v, dv = _cube(dtype)
    ref = cpu_lf.gaussian_linefit(cube, v, dv, **kw)
    got = gpu.gaussian_linefit(cp.asarray(cube), cp.asarray(v), cp.asarray(dv), **kw)
    assert set(ref) == set(got)
    assert np.isfinite(ref["amplitude"][0]).sum() > 40
    if kw["components"] == 2:
        assert (ref["ncomp"] == 2).sum() > 10  # the two-component path is exercised
    tol = gpu.PARITY
    for name, c in ref.items():
        g = np.asarray(cp.asnumpy(got[name]))
        assert g.dtype == c.dtype == np.float32 and g.shape == c.shape, name
        np.testing.assert_array_equal(np.isnan(g), np.isnan(c), err_msg=name)
        np.testing.assert_allclose(g, c, rtol=tol.rtol, atol=tol.atol, equal_nan=True, err_msg=name)

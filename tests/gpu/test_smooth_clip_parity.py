"""GPU parity of the smooth-and-clip mask kernels (issue 17 item 3).

Runs on a CUDA device (``pytest -m gpu --require-gpu``), else on the CPU emulator of
``tests/gpu_emulation``; CuPy is imported inside the tests.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.compute.contract import PARITY_TOLERANCE
from cpu_fallback import smooth_clip as cpu_sc
from gpu_kernels import smooth_clip as gpu_sc

pytestmark = pytest.mark.gpu


def _cube(seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    nz, ny, nx = 26, 30, 34
    z, y, x = np.mgrid[:nz, :ny, :nx].astype(np.float64)
    source = 5.0 * np.exp(-0.5 * (((x - 15.0) / 3.0) ** 2 + ((y - 12.0) / 4.0) ** 2 + ((z - 13.0) / 3.0) ** 2))
    cube = (source + rng.normal(0.0, 1.0, (nz, ny, nx))).astype(np.float32)
    cube[rng.random(cube.shape) < 0.02] = np.nan
    cube[:, 0, :4] = np.nan
    return cube


def _close(got, ref, tol) -> None:  # noqa: ANN001
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=tol.rtol, atol=tol.atol, equal_nan=True)


@pytest.mark.parametrize("cov", [(2.0, 0.0, 2.0), (4.0, -1.2, 1.5)])
def test_spatial_and_spectral_smoothing_parity(cov: tuple[float, float, float]) -> None:
    import cupy as cp

    cube = _cube()
    tol = PARITY_TOLERANCE["smooth_clip"]
    got = gpu_sc.smooth_spatial(cp.asarray(cube), cov=cov)
    assert isinstance(got, cp.ndarray) and got.dtype == np.float32
    _close(cp.asnumpy(got), cpu_sc.smooth_spatial(cube, cov=cov), tol)
    for window in ("boxcar", "hann"):
        got = gpu_sc.smooth_spectral(cp.asarray(cube), channels=5, window=window)
        _close(cp.asnumpy(got), cpu_sc.smooth_spectral(cube, channels=5, window=window), tol)
    _close(cp.asnumpy(gpu_sc.plane_sigma(cp.asarray(cube))), cpu_sc.plane_sigma(cube), tol)


@pytest.mark.parametrize("dilate", [0, 2])
def test_mask_parity(dilate: int) -> None:
    import cupy as cp

    cube = _cube(seed=4)
    opts = {"covariances": (None, (3.0, 0.5, 2.0)), "widths": (1, 3, 7), "snr": 3.0, "dilate": dilate}
    ref_mask, ref_sigma = cpu_sc.smooth_clip_mask(cube, **opts)
    mask, sigma = gpu_sc.smooth_clip_mask(cp.asarray(cube), **opts)
    assert isinstance(mask, cp.ndarray) and mask.dtype == np.bool_ and sigma.shape == ref_sigma.shape
    _close(cp.asnumpy(sigma), ref_sigma, PARITY_TOLERANCE["smooth_clip"])
    np.testing.assert_array_equal(cp.asnumpy(mask), ref_mask)
    assert 0 < ref_mask.mean() < 0.2
    np.testing.assert_array_equal(cp.asnumpy(gpu_sc.dilate_spectral(cp.asarray(ref_mask), channels=2)),
                                  cpu_sc.dilate_spectral(ref_mask, channels=2))

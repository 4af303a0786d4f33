"""GPU parity of the JS9 analysis kernels: ``gpu_kernels`` stats / region_flux / contours / fit2d
against the ``cpu_fallback`` reference.

Runs on a CUDA device (``pytest -m gpu --require-gpu``), else on the CPU emulator of
``tests/gpu_emulation``; needs NumPy, SciPy,
scikit-image, CuPy and pytest only (synthetic data, nothing from ``app.services``). Order
statistics, counts and positions must be identical; sums and fitted parameters agree within
the module's tolerance (``app.compute.contract.PARITY_TOLERANCE``, with the defaults below
until the table lists these modules).
"""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pytest

from app.compute.contract import PARITY_TOLERANCE, Tolerance
from cpu_fallback import contours as cpu_contours
from cpu_fallback import fit2d as cpu_fit2d
from cpu_fallback import region_flux as cpu_flux
from cpu_fallback import stats as cpu_stats
from gpu_kernels import contours as gpu_contours
from gpu_kernels import fit2d as gpu_fit2d
from gpu_kernels import region_flux as gpu_flux
from gpu_kernels import stats as gpu_stats

pytestmark = pytest.mark.gpu

DEFAULT_TOLERANCE = {
    "stats": Tolerance(rtol=1e-9),
    "region_flux": Tolerance(rtol=1e-9, atol=1e-12),
    "contours": Tolerance(rtol=1e-9, atol=1e-12),
    "fit2d": Tolerance(rtol=1e-6, atol=1e-9),
}


def _tol(module: str) -> Tolerance:
    return PARITY_TOLERANCE.get(module, DEFAULT_TOLERANCE[module])


def _block(seed: int = 4, shape: tuple[int, int, int] = (6, 57, 43), ties: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.0, shape).astype(np.float32)
    if ties:
        b = np.round(b * 3).astype(np.float32)
    b[rng.random(shape) < 0.1] = np.nan
    b[1, 2, 3] = np.inf
    b[2, 3, 4] = -np.inf
    return b


def _gauss(shape: tuple[int, int], amp: float, x0: float, y0: float, sa: float, sb: float, th: float) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    u = (xx - x0) * math.cos(th) + (yy - y0) * math.sin(th)
    v = -(xx - x0) * math.sin(th) + (yy - y0) * math.cos(th)
    return amp * np.exp(-0.5 * (u * u / sa / sa + v * v / sb / sb))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_stats_parity(ties: bool, masked: bool) -> None:
    import cupy as cp

    block = _block(ties=ties)
    mask = (np.random.default_rng(9).random(block.shape[1:]) < 0.6) if masked else None
    ref = cpu_stats.region_stats(block, mask)
    got = gpu_stats.region_stats(cp.asarray(block), None if mask is None else cp.asarray(mask))
    tol = _tol("stats")
    for key, value in ref.items():
        if key in ("sum", "sumsq", "mean", "sigma", "rms"):
            assert got[key] == pytest.approx(value, rel=tol.rtol, abs=tol.atol), key
        else:
            assert got[key] == value, key
    # chunked on the device equals the CPU whole
    parts = [gpu_stats.stats_partial(cp.asarray(block[:, y0:y0 + 10]),
                                     None if mask is None else cp.asarray(mask[y0:y0 + 10]), origin=(0, y0, 0))
             for y0 in range(0, block.shape[1], 10)]
    chunked = gpu_stats.stats_finalize(reduce(gpu_stats.stats_combine, parts))
    for key in ("npts", "median", "q1", "q3", "medabsdevmed", "minpos", "maxpos", "min", "max"):
        assert chunked[key] == ref[key], key


def test_channel_sums_parity() -> None:
    import cupy as cp

    block = _block()
    mask = np.random.default_rng(3).random(block.shape[1:]) < 0.5
    ref_sums, ref_counts = cpu_flux.channel_sums(block, mask)
    sums, counts = gpu_flux.channel_sums(cp.asarray(block), cp.asarray(mask))
    assert isinstance(sums, cp.ndarray) and sums.dtype == ref_sums.dtype and counts.dtype == ref_counts.dtype
    tol = _tol("region_flux")
    np.testing.assert_allclose(cp.asnumpy(sums), ref_sums, rtol=tol.rtol, atol=tol.atol)
    np.testing.assert_array_equal(cp.asnumpy(counts), ref_counts)


@pytest.mark.parametrize("holes", [False, True])
def test_contours_parity(holes: bool) -> None:
    import cupy as cp

    image = (_gauss((90, 120), 5.0, 50.0, 40.0, 8.0, 4.0, 0.5)
             + np.random.default_rng(1).normal(0, 0.05, (90, 120))).astype(np.float32)
    if holes:
        image[10:20, 30:60] = np.nan
    tol = _tol("contours")
    ref = cpu_contours.smooth_image(image, sigma=1.5)
    got = gpu_contours.smooth_image(cp.asarray(image), sigma=1.5)
    assert isinstance(got, cp.ndarray) and got.dtype == ref.dtype
    host = cp.asnumpy(got)
    np.testing.assert_array_equal(np.isnan(host), np.isnan(ref))
    np.testing.assert_allclose(host, ref, rtol=tol.rtol, atol=tol.atol, equal_nan=True)
    levels = cpu_contours.contour_levels(ref, n_levels=6)
    np.testing.assert_allclose(cp.asnumpy(gpu_contours.contour_levels(got, n_levels=6)), levels,
                               rtol=tol.rtol, atol=tol.atol)
    ref_paths = cpu_contours.trace_contours(ref, levels=levels)
    got_paths = gpu_contours.trace_contours(got, levels=levels)
    assert [len(p) for p in got_paths] == [len(p) for p in ref_paths]
    for a_level, b_level in zip(got_paths, ref_paths, strict=True):
        for a, b in zip(a_level, b_level, strict=True):
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_fit2d_parity() -> None:
    import cupy as cp

    truth = [(5.0, 30.3, 20.7, 4.0, 2.0, 0.4), (2.0, 25.1, 28.2, 3.0, 2.5, 2.6)]
    rng = np.random.default_rng(2)
    images = np.stack([_gauss((48, 64), *t) + 0.3 + rng.normal(0, 1e-2, (48, 64)) for t in truth]).astype(np.float32)
    images[0, :3, :] = np.nan
    tol = _tol("fit2d")
    p0 = np.stack([cpu_fit2d.estimate_gaussians(img, background=True) for img in images])
    g0 = cp.stack([gpu_fit2d.estimate_gaussians(cp.asarray(img), background=True) for img in images])
    np.testing.assert_allclose(cp.asnumpy(g0), p0, rtol=tol.rtol, atol=tol.atol)
    ref = cpu_fit2d.fit_gaussians(images, p0, background=True)
    got = gpu_fit2d.fit_gaussians(cp.asarray(images), cp.asarray(p0), background=True)
    for key in ("params", "errors", "chi2"):
        assert isinstance(got[key], cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(got[key]), ref[key], rtol=tol.rtol, atol=tol.atol, err_msg=key)
    np.testing.assert_array_equal(cp.asnumpy(got["converged"]), ref["converged"])
    model = gpu_fit2d.gaussian_model(got["params"], shape=(48, 64), n_components=1, background=True)
    np.testing.assert_allclose(cp.asnumpy(model),
                               cpu_fit2d.gaussian_model(ref["params"], shape=(48, 64), n_components=1, background=True),
                               rtol=tol.rtol, atol=1e-7)

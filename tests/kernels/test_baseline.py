"""CPU reference tests for ``cpu_fallback.baseline`` (per-pixel polynomial / median baselines)."""

from __future__ import annotations

import gzip
import importlib.util
import inspect
import shutil
from pathlib import Path

import numpy as np
import pytest
from numpy.polynomial import legendre

from cpu_fallback import baseline as bl

NGC5921 = Path(__file__).resolve().parents[2] / "app" / "demo_data" / "ngc5921_hi_cube.fits.gz"
LINE_FREE = np.r_[0:30, 70:100]


def _poly_cube(order: int, seed: int = 0, shape=(100, 9, 11)):
    """Random polynomial baselines (monomials in raw channel number) plus a line that is exactly 0
    in the line-free channels; returns (float32 cube, float64 baseline, float64 line)."""
    rng = np.random.default_rng(seed)
    nz = shape[0]
    c = np.arange(nz, dtype=np.float64)[:, None, None]
    coef = rng.normal(0, 1, (order + 1,) + shape[1:]) * (0.02 ** np.arange(order + 1))[:, None, None]
    base = sum(coef[k] * (c - 20.0) ** k for k in range(order + 1))
    line = np.zeros(shape)
    line[40:60] = np.hanning(22)[1:-1, None, None] * rng.uniform(1, 3, shape[1:])
    return (base + line).astype(np.float32), base, line


def _ulp_tol(cube: np.ndarray, k: float = 8.0) -> np.ndarray:
    """k float32 ulps of each pixel's largest |value| (the rounding of the float32 input)."""
    return k * np.spacing(np.nanmax(np.abs(cube), axis=0).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_known_polynomial_baselines_recovered_to_float32_rounding(order: int) -> None:
    cube, base, line = _poly_cube(order, seed=order)
    res, part = bl.subtract_baseline(cube, LINE_FREE, order=order)
    assert res.dtype == np.float32 and res.shape == cube.shape
    assert np.all(np.abs(res - line) <= _ulp_tol(cube) + 1e-12)
    rms_before, rms_after = bl.baseline_rms_finalize(part)
    assert rms_before == pytest.approx(np.sqrt(np.mean(cube[LINE_FREE].astype(np.float64) ** 2)), rel=1e-12)
    assert rms_after < 1e-5 * rms_before


def test_coefficients_are_legendre_on_the_rescaled_line_free_span() -> None:
    cube, _, _ = _poly_cube(3, seed=9)
    coef = bl.fit_baseline(cube, LINE_FREE, order=3)
    assert coef.shape == (4,) + cube.shape[1:] and coef.dtype == np.float64
    t = (2.0 * LINE_FREE - (0 + 99)) / 99.0  # [c_lo, c_hi] = [0, 99] -> [-1, 1]
    for j, i in [(0, 0), (4, 7), (8, 10)]:
        ref = legendre.legfit(t, cube[LINE_FREE, j, i].astype(np.float64), 3)
        np.testing.assert_allclose(coef[:, j, i], ref, rtol=1e-9, atol=1e-9)


def test_blanks_use_masked_normal_equations_and_too_few_samples_fall_back() -> None:
    cube, _, _ = _poly_cube(2, seed=3)
    cube[[0, 5, 77, 90], 1, 1] = np.nan  # some line-free samples blank: fitted on the others
    cube[:, 2, 2] = np.nan  # all blank
    keep = LINE_FREE[:3]  # exactly order + 1 = 3 finite line-free samples: too few (< order + 2)
    cube[np.setdiff1d(LINE_FREE, keep), 3, 3] = np.nan
    cube[50, 4, 4] = np.inf  # a blank outside the line-free channels only blanks that voxel
    res, _ = bl.subtract_baseline(cube, LINE_FREE, order=2)
    coef = bl.fit_baseline(cube, LINE_FREE, order=2)
    ok = np.isfinite(cube[LINE_FREE, 1, 1])
    t = (2.0 * LINE_FREE - 99.0) / 99.0
    ref = legendre.legfit(t[ok], cube[LINE_FREE, 1, 1][ok].astype(np.float64), 2)
    np.testing.assert_allclose(coef[:, 1, 1], ref, rtol=1e-9, atol=1e-9)
    assert np.isnan(res[:, 2, 2]).all() and np.isnan(coef[:, 2, 2]).all()
    # 3 usable line-free samples (channels 0-2) do not bracket the finite channels 0..69: no
    # extrapolation, the pixel falls back to a constant, the mean of the 3 (issue 11, item 6)
    const = cube[keep, 3, 3].astype(np.float64).mean()
    np.testing.assert_allclose(coef[:, 3, 3], [const, 0.0, 0.0], rtol=1e-12, atol=1e-15)
    fin = np.isfinite(cube[:, 3, 3])
    np.testing.assert_allclose(res[fin, 3, 3], cube[fin, 3, 3] - const, rtol=1e-6, atol=1e-6)
    assert np.isnan(res[[0, 5, 77, 90], 1, 1]).all() and np.isfinite(np.delete(res[:, 1, 1], [0, 5, 77, 90])).all()
    assert np.isnan(res[50, 4, 4]) and np.isfinite(np.delete(res[:, 4, 4], 50)).all()


def test_median_method_hand_computed() -> None:
    cube = np.zeros((6, 1, 2), dtype=np.float32)
    cube[:, 0, 0] = [1.0, 5.0, 9.0, 100.0, 2.0, 3.0]
    cube[:, 0, 1] = [4.0, np.nan, 8.0, 100.0, 6.0, np.nan]
    lf = np.array([0, 1, 2, 4, 5])  # pixel 0: median{1,5,9,2,3} = 3; pixel 1: median{4,8,6} = 6
    res, part = bl.subtract_baseline(cube, lf, method="median")
    coef = bl.fit_baseline(cube, lf, method="median")
    np.testing.assert_array_equal(coef[:, 0], [[3.0, 6.0]])
    np.testing.assert_array_equal(res[:, 0, 0], cube[:, 0, 0] - 3.0)
    np.testing.assert_array_equal(res[:, 0, 1], cube[:, 0, 1] - 6.0)
    # RMS over the 8 finite line-free samples, before and after
    before = np.array([1, 5, 9, 2, 3, 4, 8, 6], dtype=float)
    after = np.array([-2, 2, 6, -1, 0, -2, 2, 0], dtype=float)
    # then the pixel counts per outcome: [unchanged, order 0]
    np.testing.assert_allclose(part, [np.sum(before**2), np.sum(after**2), 8, 0, 2])
    expected = [np.sqrt(np.mean(before**2)), np.sqrt(np.mean(after**2))]
    np.testing.assert_allclose(bl.baseline_rms_finalize(part), expected)


def test_chunked_equals_whole_and_rms_partials_combine() -> None:
    cube, _, _ = _poly_cube(2, seed=5, shape=(100, 23, 13))
    cube += np.random.default_rng(1).normal(0, 0.01, cube.shape).astype(np.float32)
    cube[np.random.default_rng(2).random(cube.shape) < 0.02] = np.nan
    for kw in ({"order": 2}, {"method": "median"}):
        res, part = bl.subtract_baseline(cube, LINE_FREE, **kw)
        pieces = [bl.subtract_baseline(cube[:, a : a + 5], LINE_FREE, **kw) for a in range(0, 23, 5)]
        np.testing.assert_array_equal(res, np.concatenate([p[0] for p in pieces], axis=1))
        combined = pieces[0][1]
        for p in pieces[1:]:
            combined = bl.baseline_rms_combine(combined, p[1])
        np.testing.assert_allclose(combined, part, rtol=1e-12)
        np.testing.assert_allclose(bl.baseline_rms_finalize(combined), bl.baseline_rms_finalize(part), rtol=1e-12)


def test_errors() -> None:
    cube, _, _ = _poly_cube(1)
    with pytest.raises(ValueError, match="too few"):
        bl.subtract_baseline(cube, [3, 4, 5], order=2)  # 3 channels < order + 2
    with pytest.raises(ValueError, match="lie in"):
        bl.subtract_baseline(cube, [0, 1, 200], order=0)
    with pytest.raises(ValueError, match="method"):
        bl.subtract_baseline(cube, LINE_FREE, method="spline")
    with pytest.raises(ValueError, match="order"):
        bl.fit_baseline(cube, LINE_FREE, order=-1)
    with pytest.raises(ValueError):
        bl.fit_baseline(cube[0], LINE_FREE)
    assert np.isnan(bl.baseline_rms_finalize(np.zeros(3))).all()


def test_gpu_twin_has_the_same_public_signatures() -> None:
    from gpu_kernels import baseline as gpu

    for name in ("fit_baseline", "subtract_baseline", "baseline_rms_combine", "baseline_rms_finalize"):
        assert inspect.signature(getattr(gpu, name)) == inspect.signature(getattr(bl, name))


def _casa_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("casatasks", "casatools", "casadata"))


@pytest.mark.casa
@pytest.mark.slow
@pytest.mark.skipif(not _casa_available(), reason="casatasks/casatools/casadata not installed (casa extra)")
def test_matches_casa_imcontsub_on_ngc5921(tmp_path: Path) -> None:
    """imcontsub(fitorder=1, chans='0~9;46~55') on a central box: equal to float32 rounding.

    CASA fits a polynomial in the raw pixel coordinate; the least-squares polynomial is basis
    independent, so both give the same baseline up to rounding.
    """
    from astropy.io import fits

    from app.casa_runtime import configure_casa_offline

    configure_casa_offline(tmp_path / "casa")
    from casatasks import exportfits, imcontsub

    src = tmp_path / "ngc5921.fits"
    with gzip.open(NGC5921) as fin, open(src, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    x0, y0, x1, y1 = 88, 88, 167, 167  # inclusive pixel box around the galaxy
    imcontsub(
        imagename=str(src), linefile=str(tmp_path / "line.im"), contfile=str(tmp_path / "cont.im"),
        fitorder=1, chans="0~9;46~55", box=f"{x0},{y0},{x1},{y1}",
    )  # fmt: skip
    exportfits(imagename=str(tmp_path / "line.im"), fitsimage=str(tmp_path / "line.fits"))
    casa = np.squeeze(fits.getdata(tmp_path / "line.fits")).astype(np.float32)
    data = np.squeeze(fits.getdata(src)).astype(np.float32)[:, y0 : y1 + 1, x0 : x1 + 1]
    ours, _ = bl.subtract_baseline(data, np.r_[0:10, 46:56], order=1)
    assert casa.shape == ours.shape
    np.testing.assert_array_equal(np.isnan(casa), np.isnan(ours))
    ok = np.isfinite(ours)
    assert ok.sum() > 0.5 * ok.size
    scale = np.maximum(np.abs(data), np.abs(ours))[ok]
    assert np.all(np.abs(ours[ok] - casa[ok]) <= 4 * np.spacing(scale))

"""Compiled line width (numba, one spectrum per parallel iteration) against the NumPy oracle and closed forms.

Tolerance (documented in cpu_fallback/compiled/linewidth.py): same accepted pixel set and EW map
as the oracle, FWHM within ``1e-5`` relative (only ``exp`` differs between the two: a polynomial within
1 ulp vs NumPy's SIMD one). References independent of both: the closed form ``FWHM = 2 sqrt(2 ln 2) sigma`` of the
synthetic lines, ``sum I dv / max I`` by hand, and astropy's reading of NGC 5921.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.io.fits_reader import open_fits_image
from cpu_fallback import linewidth as oracle
from cpu_fallback.compiled import runtime
from cpu_fallback.compiled._linewidth_numerics import kth, mad_decide, median_mad
from cpu_fallback.compiled.linewidth import equivalent_width_raw, gaussian_linewidth_raw

DEMO = Path(__file__).resolve().parents[2] / "app" / "demo_data" / "ngc5921_hi_cube.fits.gz"
FWHM_CLOSED = 2.0 * math.sqrt(2.0 * math.log(2.0))
RTOL = 1e-5


def _same(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> int:
    """Same accepted set and EW, FWHM within RTOL; returns the number of accepted pixels."""
    (f, e), (rf, re) = got, want
    assert f.dtype == np.float32 and e.dtype == np.float32 and f.shape == rf.shape
    np.testing.assert_array_equal(np.isnan(f), np.isnan(rf), err_msg="accepted pixel sets differ")
    np.testing.assert_array_equal(e, re)  # NaN in the same places, identical values
    ok = np.isfinite(rf)
    np.testing.assert_allclose(f[ok], rf[ok], rtol=RTOL)
    return int(ok.sum())


def _known_widths(seed: int = 3, nz: int = 96, ny: int = 24, nx: int = 20):
    """Gaussian lines of known sigma (2..9 channels), peak 1, centres 30..66, noise 0.03, 1 % NaN."""
    rng = np.random.default_rng(seed)
    v = 1000.0 + 2.5 * np.arange(nz)
    yy, xx = np.mgrid[0:ny, 0:nx]
    sigma = 5.0 + 17.5 * xx / (nx - 1)  # km/s: 2..9 channels
    centre = 1075.0 + 90.0 * yy / (ny - 1)
    cube = np.exp(-0.5 * ((v[:, None, None] - centre) / sigma) ** 2) + rng.normal(0, 0.03, (nz, ny, nx))
    cube = cube.astype(np.float32)
    cube[rng.random(cube.shape) < 0.01] = np.nan
    cube[:, 0, 0] = np.nan  # a blank pixel
    return cube, v, np.full(nz, 2.5), sigma


def test_synthetic_known_widths_closed_form_and_oracle() -> None:
    cube, v, w, sigma = _known_widths()
    got = gaussian_linewidth_raw(cube.astype(">f4"), v, w)
    n = _same(got, oracle.gaussian_linewidth(cube, v, w))
    assert n >= cube.shape[1] * cube.shape[2] - 1  # every line is strong: all but the blank pixel
    fwhm = got[0]
    ok = np.isfinite(fwhm)
    truth = FWHM_CLOSED * sigma
    rel = np.abs(fwhm[ok] - truth[ok]) / truth[ok]
    assert np.median(rel) < 0.01 and rel.max() < 0.05  # statistical error of the fit at SNR ~ 33
    assert np.isnan(fwhm[0, 0]) and np.isnan(got[1][0, 0])


def test_ngc5921_same_as_oracle() -> None:
    image = open_fits_image(DEMO)
    src = image.source
    raw = src.read_raw()
    assert raw.data.dtype == np.dtype(">f4")
    with gzip.open(DEMO) as f:
        hdr = fits.getheader(f)
    nz = src.shape[0]
    v = (hdr["CRVAL3"] + (np.arange(nz) + 1 - hdr["CRPIX3"]) * hdr["CDELT3"]) / 1e3  # km/s, descending
    w = np.full(nz, abs(hdr["CDELT3"]) / 1e3)
    got = gaussian_linewidth_raw(raw.data, v, w, bscale=raw.bscale, bzero=raw.bzero, blank=raw.blank)
    n = _same(got, oracle.gaussian_linewidth(src.read(), v, w))
    assert n > 300  # the HI disc
    fw = got[0][np.isfinite(got[0])]
    assert 10.0 < np.median(fw) < 200.0  # km/s: a galaxy's HI line
    # EW by hand on a pixel of the disc
    y, x = np.argwhere(np.isfinite(got[0]))[0]
    spec = src.read()[:, y, x].astype(np.float64)
    assert got[1][y, x] == pytest.approx(np.nansum(spec) * w[0] / np.nanmax(spec), rel=1e-6)


@pytest.mark.parametrize("order", ["ascending", "descending", "shuffled"])
@pytest.mark.parametrize("threshold", [None, -0.05])
def test_axes_and_threshold_match_oracle(order: str, threshold: float | None) -> None:
    cube, v, w, _ = _known_widths(seed=4, nz=64, ny=10, nx=12)
    w = np.linspace(2.0, 3.0, v.size)  # unequal widths
    if order == "descending":
        v, w, cube = v[::-1].copy(), w[::-1].copy(), cube[::-1].copy()
    elif order == "shuffled":
        p = np.random.default_rng(1).permutation(v.size)
        v, w, cube = v[p], w[p], cube[p]
    got = gaussian_linewidth_raw(cube, v, w, threshold=threshold, snr_cut=2.0)
    assert _same(got, oracle.gaussian_linewidth(cube, v, w, threshold=threshold, snr_cut=2.0)) > 60


def test_scaled_integers_and_noise_cut_match_oracle() -> None:
    cube, v, w, _ = _known_widths(seed=5, nz=48, ny=9, nx=11)
    cube[:, 4] *= 0.05  # weak lines: the SNR cut and the acceptance rule decide
    bscale, bzero, blank = 1e-4, 0.25, -32768
    q = np.round((np.nan_to_num(cube, nan=0.0) - bzero) / bscale).astype(np.int16)
    q[np.isnan(cube)] = blank
    raw = q.astype(">i2")
    decoded = raw.astype(np.float32)
    decoded[raw == blank] = np.nan
    decoded = decoded * np.float32(bscale) + np.float32(bzero)
    for snr in (0.0, 3.0, 8.0):
        got = gaussian_linewidth_raw(raw, v, w, snr_cut=snr, bscale=bscale, bzero=bzero, blank=blank)
        _same(got, oracle.gaussian_linewidth(decoded, v, w, snr_cut=snr))
        ew = equivalent_width_raw(raw, w, snr_cut=snr, bscale=bscale, bzero=bzero, blank=blank)
        np.testing.assert_array_equal(ew, oracle.equivalent_width(decoded, w, snr_cut=snr))


def test_pure_noise_and_edge_cases() -> None:
    rng = np.random.default_rng(2024)
    nz = 46
    cube = rng.normal(0.0, 1.0, (nz, 40, 50)).astype(np.float32)
    v, w = 1600.0 - 5.15 * np.arange(nz), np.full(nz, 5.15)
    cube[:, 3, 3] = 0.0  # M0 = 0: blank
    cube[:, 4, 4] = -1.0  # peak <= 0: blank
    cube[:40, 5, 5] = np.nan  # 6 samples left
    cube[:, 6, 6] = np.inf  # nothing finite
    got = gaussian_linewidth_raw(cube, v, w)
    _same(got, oracle.gaussian_linewidth(cube, v, w))
    assert np.isfinite(got[0]).mean() <= 0.005  # closed form: no line, (almost) nothing accepted
    assert np.isnan(got[1][3, 3]) and np.isnan(got[1][4, 4]) and np.isnan(got[1][6, 6])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_and_slabs_give_the_same_maps(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtime._state, "threads", threads)
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    cube, v, w, _ = _known_widths(seed=6, nz=40, ny=13, nx=150)  # 3 tasks per row
    whole = gaussian_linewidth_raw(cube, v, w)
    top = gaussian_linewidth_raw(cube[:, :5], v, w)
    right = gaussian_linewidth_raw(cube[:, :, 70:], v, w)
    for a, b in zip(whole, top, strict=True):
        np.testing.assert_array_equal(a[:5], b)
    for a, b in zip(whole, right, strict=True):
        np.testing.assert_array_equal(a[:, 70:], b)


def test_bad_input() -> None:
    cube, v, w, _ = _known_widths(nz=8, ny=2, nx=2)
    with pytest.raises(ValueError, match="spectral, y, x"):
        gaussian_linewidth_raw(cube[0], v, w)
    with pytest.raises(ValueError, match="widths"):
        gaussian_linewidth_raw(cube, v, w[:-1])
    with pytest.raises(ValueError, match="coords"):
        gaussian_linewidth_raw(cube, v[:-1], w)
    f, e = gaussian_linewidth_raw(np.empty((8, 0, 3), np.float32), v, w)
    assert f.shape == (0, 3) and e.shape == (0, 3)


def test_selection_equals_sorting() -> None:
    rng = np.random.default_rng(9)
    for trial in range(400):
        n = int(rng.integers(1, 300))
        a = [rng.normal(size=n), np.round(rng.normal(size=n) * 2), np.zeros(n), np.sort(rng.normal(size=n))[::-1]][
            trial % 4].astype(np.float64)  # fmt: skip
        k = int(rng.integers(0, n))
        b = a.copy()
        s = np.sort(a)
        assert kth(b, n, k) == s[k]
        assert (b[:k] <= s[k]).all() and (b[k + 1 :] >= s[k]).all()
        med, mad = median_mad(a.copy(), n)
        assert med == np.median(a)
        assert mad == np.median(np.abs(a - np.median(a)))


def test_mad_decision_agrees_with_the_exact_mad() -> None:
    rng = np.random.default_rng(12)
    for trial in range(600):
        n = int(rng.integers(1, 260))
        a = np.round(rng.normal(size=n), 1 + trial % 3)  # ties, and MADs hit exactly by some t
        exact = median_mad(a.copy(), n)[1]
        for t in (exact, exact * (1 + 1e-12), exact * (1 - 1e-12), exact * 1.3, exact * 0.7, 0.0):
            verdict, mad = mad_decide(a.copy(), n, t)
            if verdict == 0:
                assert mad == exact
            else:
                assert (verdict > 0) == (exact <= t)

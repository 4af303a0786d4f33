"""CPU reference tests for ``cpu_fallback.linewidth`` (Gaussian FWHM by batched LM, and EW)."""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import OptimizeWarning, curve_fit

from cpu_fallback import linewidth as lw

FWHM = 2.0 * np.sqrt(2.0 * np.log(2.0))
NGC5921 = Path(__file__).resolve().parents[2] / "app" / "demo_data" / "ngc5921_hi_cube.fits.gz"


def _gauss(x, a, m, s):
    return a * np.exp(-0.5 * ((x - m) / s) ** 2)


def _line_cube(seed: int, noise: float, shape=(128, 20, 24), sigma=(6.0, 30.0), amp=(0.5, 2.0)):
    """Gaussian lines with known per-pixel amplitude, centre and sigma (km/s) plus white noise."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    v = np.linspace(-250.0, 250.0, nz)
    sig = rng.uniform(*sigma, (ny, nx))
    mu = rng.uniform(-100.0, 100.0, (ny, nx))
    a = rng.uniform(*amp, (ny, nx))
    cube = _gauss(v[:, None, None], a, mu, sig)
    if noise:
        cube = cube + rng.normal(0.0, noise, shape)
    return cube.astype(np.float32), v, np.full(nz, v[1] - v[0]), sig, a


def test_noise_free_lines_are_recovered_exactly() -> None:
    cube, v, dv, sig, _ = _line_cube(1, 0.0)
    fwhm, ew = lw.gaussian_linewidth(cube, v, dv)
    assert fwhm.dtype == np.float32 and ew.dtype == np.float32 and fwhm.shape == sig.shape
    np.testing.assert_allclose(fwhm, FWHM * sig, rtol=2e-5)
    c64 = cube.astype(np.float64)
    np.testing.assert_allclose(ew, np.sum(c64 * dv[:, None, None], axis=0) / c64.max(axis=0), rtol=1e-6)
    # the sampled peak is at most a little below the amplitude: EW ~ sigma sqrt(2 pi)
    np.testing.assert_allclose(ew, sig * np.sqrt(2 * np.pi), rtol=0.05)


@pytest.mark.parametrize("snr", [10.0, 20.0])
def test_fwhm_within_two_percent_at_snr_ten_or_more(snr: float) -> None:
    # amplitudes 1..2 with noise 1/snr: every pixel has peak/noise >= snr
    cube, v, dv, sig, _ = _line_cube(2, 1.0 / snr, shape=(256, 24, 24), sigma=(15.0, 40.0), amp=(1.0, 2.0))
    fwhm, _ = lw.gaussian_linewidth(cube, v, dv, snr_cut=3.0)
    assert np.isfinite(fwhm).all()
    rel = fwhm / (FWHM * sig) - 1.0
    # per-pixel scatter is statistical (~1/snr); the median error and the bias are < 2 % and < 1 %
    assert np.median(np.abs(rel)) < 0.02
    assert abs(np.mean(rel)) < 0.01
    assert np.percentile(np.abs(rel), 90) < 0.04


def test_matches_curve_fit_on_synthetic_pixels() -> None:
    cube, v, dv, _, _ = _line_cube(3, 0.05)
    fwhm, _ = lw.gaussian_linewidth(cube, v, dv, snr_cut=0.0)
    for j, i in [(0, 0), (3, 7), (10, 11), (19, 23), (12, 2)]:
        y = cube[:, j, i].astype(float)
        p, _ = curve_fit(_gauss, v, y, p0=[y.max(), v[np.argmax(y)], 20.0], xtol=1e-12, ftol=1e-12)
        assert fwhm[j, i] == pytest.approx(FWHM * abs(p[2]), rel=1e-4)


def test_chunked_equals_whole() -> None:
    cube, v, dv, _, _ = _line_cube(4, 0.1)
    cube[np.random.default_rng(0).random(cube.shape) < 0.03] = np.nan
    fwhm, ew = lw.gaussian_linewidth(cube, v, dv, snr_cut=3.0)
    parts = [lw.gaussian_linewidth(cube[:, a : a + 7], v, dv, snr_cut=3.0) for a in range(0, cube.shape[1], 7)]
    np.testing.assert_array_equal(fwhm, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(ew, np.concatenate([p[1] for p in parts]))


def test_blank_rules() -> None:
    cube, v, dv, _, _ = _line_cube(5, 0.02, shape=(64, 3, 4))
    cube[:, 0, 0] = np.nan  # all blank
    cube[:, 0, 1] = -np.abs(cube[:, 0, 1])  # M0 <= 0 and peak <= 0
    cube[:, 0, 2] = np.random.default_rng(1).normal(0, 0.02, 64)  # pure noise: under the SNR cut
    cube[:, 0, 3] = 0.0  # flat zero: M0 = 0
    cube[::2, 1, 0] = np.inf  # +-inf is blank too, the rest is still fitted
    fwhm, ew = lw.gaussian_linewidth(cube, v, dv, snr_cut=5.0)
    for i in range(4):
        assert np.isnan(fwhm[0, i]) and np.isnan(ew[0, i])
    assert np.isfinite(fwhm[1:]).all() and np.isfinite(ew[1:]).all()
    # snr_cut = 0 disables the cut: the noise pixel gets an EW (its M0 may be positive)
    _, ew0 = lw.gaussian_linewidth(cube, v, dv, snr_cut=0.0)
    m0 = np.sum(cube[:, 0, 2].astype(float) * dv)
    assert np.isnan(ew0[0, 2]) == (m0 <= 0)


def test_equivalent_width_hand_computed_and_threshold() -> None:
    cube = np.zeros((6, 1, 2), dtype=np.float32)
    cube[:, 0, 0] = [0, 1, 2, 4, 2, 1]  # M0 = 10 * 0.5, peak 4 -> EW 1.25
    cube[:, 0, 1] = [-1, 1, 3, 3, 1, np.nan]  # M0 = 7 * 0.5, peak 3 -> EW 7/6
    dv = np.full(6, 0.5)
    np.testing.assert_allclose(lw.equivalent_width(cube, dv), [[1.25, 7.0 / 6.0]], rtol=1e-7)
    # threshold keeps samples >= 2: pixel 0 -> (2+4+2)/2 / 4 = 1.0; pixel 1 -> (3+3)/2 / 3 = 1.0
    np.testing.assert_allclose(lw.equivalent_width(cube, dv, threshold=2.0), [[1.0, 1.0]], rtol=1e-7)
    _, ew = lw.gaussian_linewidth(cube, np.arange(6.0), dv, snr_cut=0.0)
    np.testing.assert_allclose(ew, [[1.25, 7.0 / 6.0]], rtol=1e-7)


def test_threshold_masks_samples_of_the_fit() -> None:
    cube, v, dv, sig, _ = _line_cube(6, 0.0, shape=(96, 2, 3))
    full, _ = lw.gaussian_linewidth(cube, v, dv)
    cut, _ = lw.gaussian_linewidth(cube, v, dv, threshold=0.05)
    # a noise-free Gaussian fitted on its upper part only has the same sigma
    np.testing.assert_allclose(cut, full, rtol=1e-4)
    np.testing.assert_allclose(full, FWHM * sig, rtol=1e-4)


def test_float64_input_and_shape_errors() -> None:
    cube, v, dv, sig, _ = _line_cube(7, 0.0, shape=(64, 2, 2))
    fwhm, _ = lw.gaussian_linewidth(cube.astype(np.float64), v, dv)
    assert fwhm.dtype == np.float32
    np.testing.assert_allclose(fwhm, FWHM * sig, rtol=2e-5)
    with pytest.raises(ValueError):
        lw.gaussian_linewidth(cube[0], v, dv)
    with pytest.raises(ValueError):
        lw.gaussian_linewidth(cube, v, dv[:-1])
    with pytest.raises(ValueError):
        lw.gaussian_linewidth(cube, v[:-1], dv)


def test_non_converged_fit_is_nan() -> None:
    cube, v, dv, _, _ = _line_cube(8, 0.05, shape=(64, 2, 2))
    fwhm, _ = lw.gaussian_linewidth(cube, v, dv, max_iter=1)
    assert np.isnan(fwhm).all()


def _ngc5921() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from astropy.io import fits

    with fits.open(NGC5921) as hdul:
        header = hdul[0].header
        data = np.squeeze(hdul[0].data).astype(np.float32)  # (1, 56, 256, 256) -> (56, 256, 256)
    assert header["CTYPE3"].startswith("VRAD") and header["CUNIT3"].strip() == "m/s"
    pix = np.arange(data.shape[0]) + 1.0
    v = (header["CRVAL3"] + (pix - header["CRPIX3"]) * header["CDELT3"]) / 1e3  # km/s
    return data, v, np.full(v.size, abs(header["CDELT3"]) / 1e3)


def _documented_start(v, dv, y, ok):
    """``(peak, mu0, sigma0)``: the fit start of the module notes, one spectrum, written out plainly."""
    order = np.argsort(v, kind="stable")
    v, dv, ok = v[order], dv[order], ok[order]
    y = np.where(ok, y[order], 0.0)
    peak = y.max()
    kp = int(np.argmax(y == peak))
    yn = y / peak

    def run_end(step):  # (end sample or band edge, last sample above half power)
        above, cand, k = kp, None, kp + step
        while 0 <= k < v.size:
            if ok[k]:
                if yn[k] <= 0.5:
                    if cand is not None:
                        return cand, above
                    cand = k
                else:
                    cand, above = None, k
            k += step
        return (cand, above) if cand is not None else (k, above)

    def crossing(end, above, edge):
        if not 0 <= end < v.size:
            return edge
        return v[end] + (v[above] - v[end]) * (0.5 - yn[end]) / (yn[above] - yn[end])

    (lft, al), (rgt, ar) = run_end(-1), run_end(1)
    x_l = crossing(lft, al, v[0] - dv[0] / 2)
    x_r = crossing(rgt, ar, v[-1] + dv[-1] / 2)
    run = slice(lft + 1, rgt)
    mu0 = np.sum(yn[run] * v[run] * dv[run]) / np.sum(yn[run] * dv[run])
    return peak, mu0, (x_r - x_l) / FWHM


def _curve_fit_fwhm(v, y, p0, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        p, _ = curve_fit(_gauss, v, y, p0=p0, maxfev=20000, **kw)
    return FWHM * abs(p[2])


def test_agrees_with_curve_fit_on_ngc5921() -> None:
    data, v, dv = _ngc5921()
    fwhm, ew = lw.gaussian_linewidth(data, v, dv, snr_cut=3.0)
    assert np.isfinite(fwhm).sum() > 400  # the galaxy only: noise fits are rejected (issue 11, item 5)
    flat = data.reshape(data.shape[0], -1).T.astype(np.float64)
    fin = np.isfinite(flat)
    fitted = np.flatnonzero(np.isfinite(fwhm.ravel()))  # these have finite samples
    rows = flat[fitted]
    noise = 1.4826 * np.nanmedian(np.abs(rows - np.nanmedian(rows, axis=1)[:, None]), axis=1)
    good = fitted[np.nanmax(rows, axis=1) >= 5.0 * noise]
    sample = np.random.default_rng(0).choice(good, size=min(150, good.size), replace=False)
    for k in sample:
        y, ok = flat[k], fin[k]
        # the whole spectrum, from the same start as the batched fit (its window is an implementation detail)
        ref = _curve_fit_fwhm(v[ok], y[ok], _documented_start(v, dv, y, ok), xtol=1e-10, ftol=1e-10)
        assert fwhm.ravel()[k] == pytest.approx(ref, rel=1e-3), k


def test_broad_lines_at_the_band_edge() -> None:
    # lines up to 140 km/s FWHM in a 200 km/s band, centred up to 83 km/s off centre: the fit window
    # is clipped by the band edge; a centre outside the band is NaN (module notes, step 6)
    rng = np.random.default_rng(11)
    v = np.linspace(-100.0, 100.0, 64)
    dv = np.full(v.size, v[1] - v[0])
    mu = np.array([-112.0, -82.7, -59.0, 0.0, 59.0, 82.7, 112.0])
    sig = np.array([10.0, 25.0, 45.0, 60.0])[:, None]
    cube = np.exp(-0.5 * ((v[:, None, None] - mu) / sig) ** 2) + rng.normal(0, 0.02, (v.size, sig.size, mu.size))
    cube = cube.astype(np.float32)
    fwhm, _ = lw.gaussian_linewidth(cube, v, dv, snr_cut=0.0)
    assert np.isnan(fwhm[:, [0, -1]]).all()
    inner = fwhm[:, 1:-1]
    assert np.isfinite(inner).all()
    np.testing.assert_allclose(inner, np.broadcast_to(FWHM * sig, inner.shape), rtol=0.03)
    for j, i in np.ndindex(inner.shape):
        y = cube[:, j, i + 1].astype(float)
        ref = _curve_fit_fwhm(v, y, [1.0, mu[i + 1], sig[j, 0]], xtol=1e-12, ftol=1e-12)
        assert inner[j, i] == pytest.approx(ref, rel=1e-4), (j, i)


def test_a_too_narrow_start_is_refitted_in_a_wider_window() -> None:
    # two channels in a row below half power on each side of the peak cut the half-power run short,
    # so the first window misses most of the line; the fit is redone in a window around the fitted line
    v = np.arange(200.0)
    sig = np.array([12.0, 20.0, 30.0])
    cube = np.exp(-0.5 * ((v[:, None, None] - 100.0) / sig) ** 2) + 0.01 * np.sin(v)[:, None, None]
    cube[97:99] = cube[101:103] = 0.3
    cube[99:101] = 1.05
    cube = cube.astype(np.float32)
    fwhm, _ = lw.gaussian_linewidth(cube, v, np.ones(v.size), snr_cut=0.0)
    for i, s in enumerate(sig):
        y = cube[:, 0, i].astype(float)
        peak, mu0, s0 = _documented_start(v, np.ones(v.size), y, np.ones(v.size, bool))
        assert s0 < 0.2 * s  # the start is far too narrow
        ref = _curve_fit_fwhm(v, y, [1.0, 100.0, s], xtol=1e-12, ftol=1e-12)
        assert fwhm[0, i] == pytest.approx(ref, rel=1e-4)


def test_snr_cut_uses_the_exact_robust_noise() -> None:
    rng = np.random.default_rng(12)
    nz, n = 50, 400
    y = rng.normal(0.0, 1.0, (nz, 1, n)).astype(np.float32)
    y[rng.random(y.shape) < 0.05] = np.nan
    y[rng.random(y.shape) < 0.01] = np.inf
    y[rng.random(y.shape) < 0.01] = -np.inf
    y[:, 0, :100] = np.round(y[:, 0, :100] * 4) / 4  # ties
    y[:, 0, 100:110] = np.nan
    y[::3, 0, 110:120] = np.nan  # odd and even finite counts
    flat = y[:, 0].astype(np.float64)
    fin = np.isfinite(flat)
    cols = list(zip(flat.T, fin.T, strict=True))
    noise = np.array([1.4826 * np.median(np.abs(c[f] - np.median(c[f]))) if f.any() else np.nan for c, f in cols])
    peak = np.array([c[f].max() if f.any() else np.nan for c, f in cols])
    m0 = np.nansum(np.where(fin, flat, 0.0), axis=0)
    dv = np.ones(nz)
    for cut in (1.5, 2.0, 2.5):
        # some pixels exactly at the cut: peak == cut * noise
        ew = lw.equivalent_width(y, dv, snr_cut=cut)[0]
        expect = (m0 > 0) & (peak > 0) & (peak >= cut * noise)
        np.testing.assert_array_equal(np.isfinite(ew), expect)
        assert 0 < expect.sum() < n


def test_channel_order_and_single_pixel_calls_give_the_same_result() -> None:
    cube, v, dv, _, _ = _line_cube(13, 0.1, shape=(90, 6, 7))
    cube[np.random.default_rng(1).random(cube.shape) < 0.03] = np.nan
    fwhm, ew = lw.gaussian_linewidth(cube, v, dv, snr_cut=3.0)
    assert np.isfinite(fwhm).sum() > 30
    perm = np.random.default_rng(2).permutation(v.size)  # any channel order: the same sorted axis
    for c, x, w in ((cube[perm], v[perm], dv[perm]), (cube[::-1], v[::-1], dv[::-1])):
        f2, e2 = lw.gaussian_linewidth(c, x, w, snr_cut=3.0)
        np.testing.assert_array_equal(f2, fwhm)
        np.testing.assert_array_equal(e2, ew)
    for j, i in [(0, 0), (2, 3), (5, 6)]:  # one pixel at a time: the same arithmetic
        f1, e1 = lw.gaussian_linewidth(cube[:, j : j + 1, i : i + 1], v, dv, snr_cut=3.0)
        np.testing.assert_array_equal(f1[0, 0], fwhm[j, i])
        np.testing.assert_array_equal(e1[0, 0], ew[j, i])


def test_gpu_twin_has_the_same_public_signatures() -> None:
    from gpu_kernels import linewidth as gpu

    for name in ("equivalent_width", "gaussian_linewidth"):
        assert inspect.signature(getattr(gpu, name)) == inspect.signature(getattr(lw, name))

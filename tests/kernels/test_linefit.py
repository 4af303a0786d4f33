"""Gaussian line-fit maps (issue 17, item 5): parameters and 1σ errors against independent references.

References: ``scipy.optimize.curve_fit`` (default ``absolute_sigma=False``) on every spectrum,
the scatter of the fitted parameters over 500 noise realisations (closed-form lines with known
noise), the known parameters of synthetic one- and two-component lines, and the line-width map
(the one-component fit is the same fit).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from cpu_fallback.linefit import gaussian_linefit
from cpu_fallback.linewidth import gaussian_linewidth
from kernel_common import gaussfit
from kernel_common.constants import FWHM_PER_SIGMA

NAMES = ("amplitude", "centre", "sigma")


def _g(x, a, m, s):
    return a * np.exp(-0.5 * ((x - m) / s) ** 2)


def _g2(x, a, m, s, b, n, t):
    return _g(x, a, m, s) + _g(x, b, n, t)


def _axis(nz: int = 100, lo: float = -250.0, hi: float = 250.0):
    v = np.linspace(lo, hi, nz)
    return v, np.full(nz, v[1] - v[0])


def _params(res: dict, comp: int, y: int, x: int) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([res[n][comp, y, x] for n in NAMES], dtype=np.float64),
            np.array([res[n + "_err"][comp, y, x] for n in NAMES], dtype=np.float64))


def test_one_component_matches_curve_fit_and_the_line_width() -> None:
    rng = np.random.default_rng(1)
    v, dv = _axis(80, -200.0, 200.0)
    ny, nx = 12, 15
    amp = rng.uniform(0.5, 2.0, (ny, nx))
    mu = rng.uniform(-60.0, 60.0, (ny, nx))
    sig = rng.uniform(10.0, 30.0, (ny, nx))
    cube = (_g(v[:, None, None], amp, mu, sig) + rng.normal(0, 0.05, (80, ny, nx))).astype(np.float32)
    cube[7, 3, 4] = np.nan  # a blank sample is left out of both fits
    res = gaussian_linefit(cube, v, dv)
    assert set(res) == {*NAMES, *(n + "_err" for n in NAMES), "reduced_chi2", "ncomp"}
    assert res["amplitude"].shape == (1, ny, nx) and res["reduced_chi2"].shape == (ny, nx)
    fwhm, _ = gaussian_linewidth(cube, v, dv)
    np.testing.assert_array_equal(np.isfinite(fwhm), np.isfinite(res["sigma"][0]))
    np.testing.assert_allclose(FWHM_PER_SIGMA * res["sigma"][0], fwhm, rtol=1e-6)
    assert np.isfinite(fwhm).all()
    for y in range(ny):
        for x in range(nx):
            ok = np.isfinite(cube[:, y, x])
            p, cov = curve_fit(_g, v[ok], cube[ok, y, x].astype(np.float64), p0=[amp[y, x], mu[y, x], sig[y, x]])
            e = np.sqrt(np.diag(cov))
            mine, err = _params(res, 0, y, x)
            assert np.all(np.abs(mine - p) <= 5e-3 * e + 1e-4 * np.abs(p)), (y, x, mine, p, e)
            np.testing.assert_allclose(err, e, rtol=2e-3)
    assert (res["ncomp"] == 1).all()
    # reduced chi^2 of a correct model with Gaussian noise: ~1 (the MAD noise of 80 residuals scatters ~15 %)
    assert 0.9 < np.median(res["reduced_chi2"]) < 1.15


def _realisations(truth: tuple, n: int, noise: float, seed: int, nz: int = 100):
    rng = np.random.default_rng(seed)
    v, dv = _axis(nz)
    model = _g2(v, *truth) if len(truth) == 6 else _g(v, *truth)
    cube = (model[:, None, None] + rng.normal(0.0, noise, (nz, 1, n))).astype(np.float64)
    return cube, v, dv


def _check_errors_against_scatter(res: dict, truth: tuple, comps: int, keep: np.ndarray) -> None:
    for c in range(comps):
        for j, name in enumerate(NAMES):
            vals = res[name][c, 0, keep].astype(np.float64)
            errs = res[name + "_err"][c, 0, keep].astype(np.float64)
            scatter, typical = vals.std(ddof=1), np.median(errs)
            assert abs(typical / scatter - 1.0) <= 0.10, (name, c, typical, scatter)  # errors calibrated
            assert abs(vals.mean() - truth[3 * c + j]) <= 4.0 * scatter / np.sqrt(keep.sum())  # unbiased


def test_one_component_errors_match_the_scatter_over_500_noise_realisations() -> None:
    truth = (1.0, 12.0, 18.0)
    cube, v, dv = _realisations(truth, 500, 0.08, seed=7)
    res = gaussian_linefit(cube, v, dv)
    keep = np.isfinite(res["amplitude"][0, 0])
    assert keep.all()
    _check_errors_against_scatter(res, truth, 1, keep)


@pytest.mark.parametrize("truth", [(1.0, -60.0, 15.0, 0.6, 70.0, 20.0),  # separated
                                   (1.0, -20.0, 15.0, 1.0, 25.0, 15.0),  # blended pair
                                   (0.5, 0.0, 60.0, 1.0, 10.0, 8.0)])  # broad + narrow
def test_two_components_recovered_with_calibrated_errors(truth) -> None:
    cube, v, dv = _realisations(truth, 500, 0.05, seed=11)
    res = gaussian_linefit(cube, v, dv, components=2)
    assert res["amplitude"].shape == (2, 1, 500)
    two = res["ncomp"][0] == 2
    assert two.mean() >= 0.98
    assert np.all(res["centre"][0, 0, two] < res["centre"][1, 0, two])  # ordered by centre
    _check_errors_against_scatter(res, truth, 2, two)
    # against curve_fit from the truth on a few spectra: the same least-squares optimum and errors
    for i in np.flatnonzero(two)[:20]:
        p, cov = curve_fit(_g2, v, cube[:, 0, i], p0=truth)
        e = np.sqrt(np.diag(cov))
        mine = np.array([res[n][c, 0, i] for c in range(2) for n in NAMES], dtype=np.float64)
        err = np.array([res[n + "_err"][c, 0, i] for c in range(2) for n in NAMES], dtype=np.float64)
        assert np.all(np.abs(mine - p) <= 0.02 * e + 1e-4 * np.abs(p)), (i, mine, p, e)
        np.testing.assert_allclose(err, e, rtol=0.02)


def test_a_single_line_keeps_one_component() -> None:
    cube, v, dv = _realisations((1.0, 5.0, 20.0), 500, 0.05, seed=3)
    res = gaussian_linefit(cube, v, dv, components=2)
    ncomp = res["ncomp"][0]
    assert np.isfinite(res["amplitude"][0]).all()
    assert (ncomp == 2).mean() <= 0.02  # the BIC margin of 10 rarely admits a noise component
    one = ncomp == 1
    assert np.isnan(res["amplitude"][1, 0, one]).all() and np.isnan(res["sigma_err"][1, 0, one]).all()
    ref = gaussian_linefit(cube, v, dv, components=1)  # one-component pixels are the one-component fit
    np.testing.assert_array_equal(res["sigma"][0, 0, one], ref["sigma"][0, 0, one])


def test_blank_and_noise_pixels_are_nan_and_ncomp_zero() -> None:
    rng = np.random.default_rng(4)
    v, dv = _axis(60)
    cube = rng.normal(0.0, 1.0, (60, 4, 5)).astype(np.float32)
    cube[:, 0, 0] = np.nan
    res = gaussian_linefit(cube, v, dv, components=2)
    assert res["ncomp"][0, 0] == 0 and np.isnan(res["amplitude"][:, 0, 0]).all()
    assert np.isnan(res["reduced_chi2"][0, 0])
    with pytest.raises(ValueError, match="components"):
        gaussian_linefit(cube, v, dv, components=3)
    with pytest.raises(ValueError, match="shape"):
        gaussian_linefit(cube, v[:-1], dv)


def test_chol_solve_and_covariance_against_numpy() -> None:
    rng = np.random.default_rng(9)
    m, n = 50, 6
    j = rng.normal(size=(m, 20, n))
    a = np.einsum("mki,mkj->mij", j, j)
    b = rng.normal(size=(m, n, 2))
    x, ok = gaussfit.chol_solve(a, b, np)
    assert ok.all()
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-9, atol=1e-12)
    a[3] = 0.0  # singular: flagged, never raised
    assert not gaussfit.chol_solve(a, b, np)[1][3]

"""Propagated moment uncertainties (issue 17 item 2) against the scatter of 500 noise realisations."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback import casa_moments, moment_errors, moments

NZ, NREAL = 40, 500
V = np.linspace(-60.0, 60.0, NZ)  # km/s
DV = V[1] - V[0]
W = np.full(NZ, DV)


def _realisations(noise: np.ndarray, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Three closed-form Gaussian lines (different centre/width/peak) × 500 noise draws, along x."""
    peaks, centres, sigmas = np.array([4.0, 3.0, 5.0]), np.array([0.0, -12.0, 9.0]), np.array([8.0, 5.0, 12.0])
    clean = peaks * np.exp(-0.5 * ((V[:, None] - centres) / sigmas) ** 2)  # (nz, 3)
    rng = np.random.default_rng(seed)
    draws = clean[:, :, None] + noise[:, None, None] * rng.standard_normal((NZ, 3, NREAL))
    return clean, draws.astype(np.float32)  # (nz, 3 lines, 500)


@pytest.mark.parametrize("per_channel", [False, True])
def test_sigma_maps_match_scatter_of_500_realisations(per_channel: bool) -> None:
    noise = np.linspace(0.05, 0.15, NZ) if per_channel else np.full(NZ, 0.1)
    _, cube = _realisations(noise)
    maps = moments.moment_maps(cube, V, W, orders=(0, 1, 2))
    sig = moment_errors.moment_sigma_maps(cube, V, W, noise)
    for k in (0, 1, 2):
        scatter = np.std(maps[k].astype(np.float64), axis=1, ddof=1)  # (3,)
        predicted = np.median(sig[k], axis=1)
        np.testing.assert_allclose(predicted, scatter, rtol=0.10, err_msg=f"order {k}")


def test_dispersion_sigma_matches_scatter_of_casa_moment2() -> None:
    noise = np.full(NZ, 0.002)  # √V is close to linear in the noise only where σ_V << V
    _, cube = _realisations(noise, seed=5)
    disp = casa_moments.casa_moment_maps(cube, V, W, moments=(2,))[2].astype(np.float64)
    sig = moment_errors.moment_sigma_maps(cube, V, W, noise, dispersion=True)[2]
    np.testing.assert_allclose(np.median(sig, axis=1), np.std(disp, axis=1, ddof=1), rtol=0.10)


def test_closed_forms_on_a_noiseless_line() -> None:
    """σ_M0 = Δv·rms·√N, σ_M1 and σ_V by hand from the formulas' sums, with a threshold mask."""
    clean, _ = _realisations(np.zeros(NZ))
    cube = clean[:, :, None].astype(np.float32)  # (nz, 3, 1)
    rms, thr = 0.1, 0.2
    sig = moment_errors.moment_sigma_maps(cube, V, W, rms, threshold=thr)
    for j in range(3):
        x = cube[:, j, 0].astype(np.float64)
        keep = x >= thr
        m0 = np.sum(x[keep]) * DV
        m1 = np.sum(x[keep] * V[keep]) * DV / m0
        var = np.sum(x[keep] * (V[keep] - m1) ** 2) * DV / m0
        assert sig[0][j, 0] == pytest.approx(DV * rms * np.sqrt(keep.sum()), rel=1e-6)
        assert sig[1][j, 0] == pytest.approx(np.sqrt(np.sum(((V[keep] - m1) * DV * rms) ** 2)) / m0, rel=1e-5)
        expected_v = np.sqrt(np.sum((((V[keep] - m1) ** 2 - var) * DV * rms) ** 2)) / m0
        assert sig[2][j, 0] == pytest.approx(expected_v, rel=1e-5)


def test_blank_and_bad_inputs() -> None:
    cube = np.ones((NZ, 2, 2), dtype=np.float32)
    cube[:, 0, 0] = np.nan
    cube[:, 1, 1] = 0.0
    sig = moment_errors.moment_sigma_maps(cube, V, W, 0.1)
    assert np.isnan(sig[0][0, 0]) and np.isnan(sig[1][0, 0]) and np.isnan(sig[2][0, 0])
    assert sig[0][1, 1] == pytest.approx(DV * 0.1 * np.sqrt(NZ), rel=1e-6)  # M0 = 0 still has a σ
    assert np.isnan(sig[1][1, 1]) and np.isnan(sig[2][1, 1])
    with pytest.raises(ValueError, match="noise"):
        moment_errors.moment_sigma_maps(cube, V, W, -1.0)
    with pytest.raises(ValueError, match="shape"):
        moment_errors.moment_sigma_maps(cube, V[:-1], W, 0.1)
    with pytest.raises(ValueError, match="only one"):
        moment_errors.moment_sigma_maps(cube, V, W, 0.1, include=(0, 1), exclude=(0, 1))

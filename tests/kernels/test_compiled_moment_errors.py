"""Moment σ fast path (issue 17: one compiled pass) against the NumPy oracle, and the oracle's
one-pass power sums against the two-pass centred formulas written out here."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback import moment_errors as oracle
from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.moment_errors import moment_sigma_maps

NZ, NY, NX = 48, 9, 11
V = np.linspace(-120.0, 120.0, NZ)
W = np.full(NZ, V[1] - V[0])
NOISE = np.linspace(0.05, 0.15, NZ)


def _cube(seed: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centre = rng.uniform(-80, 80, (NY, NX))
    width = rng.uniform(4, 30, (NY, NX))
    cube = 2.0 * np.exp(-0.5 * ((V[:, None, None] - centre) / width) ** 2) + rng.normal(0, 0.1, (NZ, NY, NX))
    cube[rng.random(cube.shape) < 0.05] = np.nan
    cube[:, 0, 0] = np.nan  # no kept voxel
    cube[:, 0, 1] = 0.0  # M0 = 0
    cube[3, 1, 1] = np.inf
    return cube.astype(np.float32)


def _two_pass(cube: np.ndarray, keep: np.ndarray, dispersion: bool) -> dict[int, np.ndarray]:
    """The formulas of the oracle's docstring, with d = v − M1 formed explicitly (float64)."""
    x = np.where(keep, cube.astype(np.float64), 0.0)
    w, s = W[:, None, None], NOISE[:, None, None]
    a = np.where(keep, (w * s) ** 2, 0.0)
    m0 = (x * w).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = (x * w * V[:, None, None]).sum(axis=0) / m0
        d = V[:, None, None] - m1
        var = (x * w * d * d).sum(axis=0) / m0
        sig0 = np.sqrt(a.sum(axis=0))
        sig1 = np.sqrt((a * d * d).sum(axis=0)) / np.abs(m0)
        sigv = np.sqrt((a * (d * d - var) ** 2).sum(axis=0)) / np.abs(m0)
        sig2 = sigv / (2 * np.sqrt(var)) if dispersion else sigv
    n = keep.sum(axis=0)
    bad = (n == 0) | (m0 == 0)
    return {0: np.where(n == 0, np.nan, sig0), 1: np.where(bad, np.nan, sig1),
            2: np.where(bad | (dispersion & ~(var > 0)), np.nan, sig2)}


OPTIONS = [{}, {"threshold": 0.3}, {"include": (0.2, 1.5)}, {"exclude": 0.25, "dispersion": True},
           {"threshold": 0.1, "exclude": (-0.5, 0.4)}, {"dispersion": True}]


@pytest.mark.parametrize("kw", OPTIONS)
@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_equals_oracle(kw: dict, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtime._state, "threads", threads)
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    cube = _cube()
    fast = moment_sigma_maps(cube, V, W, NOISE, **kw)
    ref = oracle.moment_sigma_maps(cube, V, W, NOISE, **kw)
    for k in (0, 1, 2):
        assert fast[k].dtype == np.float32 and fast[k].shape == (NY, NX)
        np.testing.assert_array_equal(np.isnan(fast[k]), np.isnan(ref[k]))
        np.testing.assert_allclose(fast[k], ref[k], rtol=2e-6, equal_nan=True)
    if not kw or kw == {"dispersion": True}:  # all-zero spectrum kept: σ_M0 defined, σ_M1 not (M0 = 0)
        assert np.isnan(fast[0][0, 0]) and np.isfinite(fast[0][0, 1]) and np.isnan(fast[1][0, 1])


@pytest.mark.parametrize("kw", OPTIONS)
def test_one_pass_power_sums_equal_the_centred_formulas(kw: dict) -> None:
    cube = _cube(seed=11)
    keep = np.isfinite(cube)
    x = cube.astype(np.float64)
    if "threshold" in kw:
        keep &= x >= kw["threshold"]
    if "include" in kw:
        keep &= (x >= kw["include"][0]) & (x <= kw["include"][1])
    if "exclude" in kw:
        lo, hi = (-kw["exclude"], kw["exclude"]) if np.isscalar(kw["exclude"]) else kw["exclude"]
        keep &= (x <= lo) | (x >= hi)
    expected = _two_pass(cube, keep, kw.get("dispersion", False))
    for impl in (oracle.moment_sigma_maps, moment_sigma_maps):
        got = impl(cube, V, W, NOISE, **kw)
        for k in (0, 1, 2):
            np.testing.assert_array_equal(np.isnan(got[k]), np.isnan(expected[k]), err_msg=f"{impl} {k}")
            np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, equal_nan=True, err_msg=f"{impl} {k}")


def test_byte_order_strides_and_errors() -> None:
    cube = _cube()
    ref = oracle.moment_sigma_maps(cube, V, W, 0.1)
    swapped = moment_sigma_maps(cube.astype(">f4"), V, W, 0.1)
    strided = moment_sigma_maps(np.asfortranarray(cube)[:, ::1, :], V, W, 0.1)
    for k in (0, 1, 2):
        np.testing.assert_allclose(swapped[k], ref[k], rtol=2e-6, equal_nan=True)
        np.testing.assert_allclose(strided[k], ref[k], rtol=2e-6, equal_nan=True)
    with pytest.raises(ValueError, match="noise"):
        moment_sigma_maps(cube, V, W, -1.0)
    with pytest.raises(ValueError, match="only one"):
        moment_sigma_maps(cube, V, W, 0.1, include=(0, 1), exclude=(0, 1))
    with pytest.raises(ValueError, match="shape"):
        moment_sigma_maps(cube, V[:-1], W, 0.1)

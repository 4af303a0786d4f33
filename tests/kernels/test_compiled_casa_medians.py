"""Compiled CASA medians (moments 3 and 4) against the NumPy oracle and hand-computed values.

The compiled kernel selects order statistics where the oracle sorts, and runs the same float32
running sum for the median coordinate: the maps must be *equal* (NaN positions included).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.casa_moments import casa_moment_maps
from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.moments_casa import casa_moment_maps_raw
from cpu_fallback.compiled.moments_casa_median import select_rank


def _cube(nz: int, seed: int, ties: bool = False) -> np.ndarray:
    """Lines plus noise with blanks, infinities, fully blank pixels and (optionally) many ties."""
    rng = np.random.default_rng(seed)
    ny, nx = 7, 37  # nx not a multiple of the transpose tile
    z = np.arange(nz)[:, None, None]
    centre = nz / 3 + 0.4 * np.arange(nx)[None, None, :]
    cube = 2.0 * np.exp(-0.5 * ((z - centre) / 3.0) ** 2) + rng.normal(0, 0.4, (nz, ny, nx))
    if ties:
        cube = np.round(cube * 4) / 4
    cube = cube.astype(np.float32)
    cube[rng.random(cube.shape) < 0.05] = np.nan
    cube[:, 0, 0] = np.nan
    cube[2:5, 1, 1] = np.inf
    cube[:, 3, 5] = -np.inf
    return cube


@pytest.mark.parametrize("nz", [1, 2, 9, 64, 101, 150, 256])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("rng_kw", [{"include": [0.0, 3.0]}, {"exclude": [0.1, 0.75]}, {"include": [-2.5, -0.1]},
                                    {"include": 0.8}])
def test_medians_equal_the_oracle(nz: int, ties: bool, rng_kw: dict) -> None:
    cube = _cube(nz, seed=nz, ties=ties)
    v = 1400.0 + 2.5 * np.arange(nz)
    w = np.full(nz, 2.5)
    moms = [3, 4] if "exclude" not in rng_kw else [3, 4, 0]
    if "include" in rng_kw and rng_kw["include"] == 0.8:
        moms = [3]  # [-0.8, 0.8] is not one-signed: moment 4 is refused
    got = casa_moment_maps_raw(cube.astype(">f4"), v, w, moments=moms, **rng_kw)
    want = casa_moment_maps(cube, v, w, moments=moms, **rng_kw)
    for k in moms:
        np.testing.assert_array_equal(got[k], want[k], err_msg=f"moment {k}")


def test_median_rules_by_hand() -> None:
    """casacore median: rank (n-1)//2, the mean of the middle two only for even n <= 100."""
    spectra = {
        "odd": [5.0, 1.0, 3.0],                 # 3
        "even_small": [4.0, 1.0, 3.0, 2.0],     # (2 + 3) / 2
        "with_blank": [np.nan, 7.0, 1.0],       # 2 kept: (1 + 7) / 2
    }
    nz = 4
    cube = np.full((nz, 1, 3), np.nan, np.float32)
    for i, s in enumerate(spectra.values()):
        cube[: len(s), 0, i] = s
    v = np.arange(nz, dtype=float)
    got = casa_moment_maps_raw(cube, v, np.ones(nz), moments=[3])[3][0]
    np.testing.assert_array_equal(got, np.float32([3.0, 2.5, 4.0]))
    big = np.arange(102, dtype=np.float32)[::-1].copy()  # even n > 100: the lower middle value, 50
    got = casa_moment_maps_raw(big[:, None, None], np.arange(102.0), np.ones(102), moments=[3])[3]
    assert got[0, 0] == np.float32(50.0)


def test_median_coordinate_by_hand() -> None:
    """Running sum c = |x0|, c = x + |c|: [1, 2, 3, 4] -> 1, 3, 6, 10; half of 10 first reached at 6."""
    cube = np.float32([1, 2, 3, 4])[:, None, None]
    v = np.array([10.0, 20.0, 30.0, 40.0])
    got = casa_moment_maps_raw(cube, v, np.ones(4), moments=[4], include=[0.0, 100.0])[4]
    assert got[0, 0] == np.float32(30.0)


@pytest.mark.parametrize("threads", [1, 2])
def test_rows_and_threads_give_the_same_maps(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtime._state, "threads", threads)
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    cube = _cube(40, seed=3).astype(">f4")
    v, w = np.arange(40.0), np.ones(40)
    whole = casa_moment_maps_raw(cube, v, w, moments=[3, 4], include=[0.0, 5.0])
    part = casa_moment_maps_raw(cube[:, 2:6], v, w, moments=[3, 4], include=[0.0, 5.0])
    for k in (3, 4):
        np.testing.assert_array_equal(part[k], whole[k][2:6])


def test_select_rank_against_sort() -> None:
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 10, 57, 200):
        for _ in range(20):
            a = rng.integers(0, 6, n).astype(np.float32) if n > 3 else rng.random(n).astype(np.float32)
            ref = np.sort(a)
            for k in {0, (n - 1) // 2, n - 1}:
                b = a.copy()
                assert select_rank(b, n, k) == ref[k]
                assert np.all(b[:k] <= b[k]) and np.all(b[k + 1:] >= b[k])
                np.testing.assert_array_equal(np.sort(b), ref)

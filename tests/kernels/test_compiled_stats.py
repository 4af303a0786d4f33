"""Compiled imstat (one pass + selection) against the NumPy oracle, hand-computed values and casatasks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from app.casa_runtime import casatasks_available, run_casa_task
from app.io.fits_reader import open_fits_image
from cpu_fallback import stats as oracle
from cpu_fallback.compiled import runtime
from cpu_fallback.compiled import stats as fast
from tests.api.js9_support import decompress_demo

SUM_KEYS = ("sum", "sumsq", "mean", "sigma", "rms")
EXACT_KEYS = ("npts", "min", "max", "median", "q1", "q3", "quartile", "medabsdevmed", "minpos", "maxpos")


def _assert_same(got: dict, want: dict) -> None:
    """Order statistics and positions bit for bit; the sums to float64 rounding."""
    for key in EXACT_KEYS:
        g, w = got[key], want[key]
        if isinstance(w, tuple):
            assert tuple(g) == w, key
        elif isinstance(w, float) and math.isnan(w):
            assert math.isnan(g), key
        else:
            assert g == w, (key, g, w)
    for key in SUM_KEYS:
        if math.isnan(want[key]):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-12, abs=1e-300), key


def _block(seed: int, shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(0.3, 2.0, shape).astype(np.float32)
    a[rng.random(shape) < 0.05] = np.nan
    a[0, 0, :3] = [np.inf, -np.inf, np.nan]
    return a


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("groups", [None, 7])
def test_equals_oracle(seed: int, masked: bool, groups: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (3, 41, 37) if seed else (1, 64, 50)
    block = _block(seed, shape)
    if seed == 2:
        block = np.round(block * 2) / 2  # many ties, -0.0 and 0.0 both present
        block[1, 5, 5] = -0.0
    mask = np.random.default_rng(seed + 10).random(shape[1:]) < 0.6 if masked else None
    if groups:  # many thread groups, each with its own histogram
        monkeypatch.setattr(fast, "_GROUP_MAX", block.size // groups)
    got = fast.region_stats_raw(block, mask, origin=(4, 5, 6))
    want = oracle.stats_finalize(oracle.stats_partial(block, mask, origin=(4, 5, 6)))
    _assert_same(got, want)
    sums, counts = (np.asarray(v) for v in (got["channel_sum"], got["channel_npts"]))
    from cpu_fallback.region_flux import channel_sums

    rsum, rcount = channel_sums(block, mask)
    np.testing.assert_array_equal(counts, rcount)
    np.testing.assert_allclose(sums, rsum, rtol=1e-12, atol=1e-9)


def test_stored_types_equal_the_decoded_values() -> None:
    rng = np.random.default_rng(5)
    ints = rng.integers(-300, 300, (2, 30, 40)).astype(">i2")
    ints[0, 3, 4] = -32768
    got = fast.region_stats_raw(ints, bscale=0.5, bzero=3.0, blank=-32768)
    values = ints.astype(np.float32)
    values[ints == -32768] = np.nan
    values = values * np.float32(0.5) + np.float32(3.0)
    _assert_same(got, oracle.region_stats(values))
    big = _block(6, (2, 33, 29)).astype(">f4")
    _assert_same(fast.region_stats_raw(big), oracle.region_stats(np.asarray(big, dtype=np.float32)))
    view = _block(7, (4, 20, 30)).astype(">f4")[1:3, 2:18, 5:25]  # a strided view of the memmap kind
    _assert_same(fast.region_stats_raw(view), oracle.region_stats(np.ascontiguousarray(view, dtype=np.float32)))


def test_hand_computed_values() -> None:
    x = np.array([[[8, 1, np.nan, 3, 2, 7, 5, 4, 6]]], dtype=np.float32)  # 1..8 and a blank
    got = fast.region_stats_raw(x)
    assert got["npts"] == 8 and got["sum"] == 36 and got["sumsq"] == 204
    assert got["median"] == 4.5 and got["q1"] == 2 and got["q3"] == 6 and got["quartile"] == 4
    assert got["medabsdevmed"] == 2.0  # |x - 4.5| = .5 .5 1.5 1.5 2.5 2.5 3.5 3.5
    assert got["sigma"] == pytest.approx(math.sqrt(6.0)) and got["rms"] == pytest.approx(math.sqrt(204 / 8))
    assert got["minpos"] == (0, 0, 1) and got["maxpos"] == (0, 0, 0)
    odd = fast.region_stats_raw(np.array([[[3, 1, 2, 10, 3]]], dtype=np.float32))
    assert odd["median"] == 3 and odd["q1"] == 2 and odd["q3"] == 3 and odd["medabsdevmed"] == 1
    assert odd["minpos"] == (0, 0, 1) and odd["maxpos"] == (0, 0, 3)


def test_edge_cases() -> None:
    empty = fast.region_stats_raw(np.full((1, 3, 3), np.nan, dtype=np.float32))
    assert empty["npts"] == 0 and math.isnan(empty["median"]) and empty["minpos"] == (-1, -1, -1)
    one = fast.region_stats_raw(np.array([[[np.nan, 2.5]]], dtype=np.float32))
    assert one["npts"] == 1 and one["median"] == one["q1"] == one["q3"] == 2.5 and one["sigma"] == 0.0
    assert one["medabsdevmed"] == 0.0 and one["minpos"] == (0, 0, 1)
    const = np.full((2, 50, 60), 1.25, dtype=np.float32)  # everything in one histogram bin
    _assert_same(fast.region_stats_raw(const), oracle.region_stats(const))
    zeros = np.array([[[-0.0, 0.0, 0.0, 1.0]]], dtype=np.float32)
    _assert_same(fast.region_stats_raw(zeros), oracle.region_stats(zeros))
    spread = np.array([[[-3e38, -1e-30, 0.0, 1e-40, 2.0, 3e38]]], dtype=np.float32)  # extremes and a subnormal
    _assert_same(fast.region_stats_raw(spread), oracle.region_stats(spread))
    with pytest.raises(ValueError, match="mask shape"):
        fast.region_stats_raw(const, np.ones((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="block"):
        fast.region_stats_raw(np.zeros((3, 3), dtype=np.float32))


def test_pieces_release_every_piece_and_give_the_same_numbers() -> None:
    block = _block(11, (5, 40, 30)).astype(">f4")
    want = oracle.region_stats(np.asarray(block, dtype=np.float32))
    for piece_bytes in (2 * 40 * 30 * 4, 7 * 30 * 4, 1):  # whole planes, rows of a plane, one row each
        released: list[np.ndarray] = []
        got = fast.region_stats_raw(block, piece_bytes=piece_bytes, release=released.append)
        _assert_same(got, want)
        covered = np.zeros(block.shape, dtype=int)
        for piece in released:  # every voxel released once per pass
            z0 = (piece.__array_interface__["data"][0] - block.__array_interface__["data"][0]) // block.strides[0]
            rest = (piece.__array_interface__["data"][0] - block.__array_interface__["data"][0]) % block.strides[0]
            y0 = rest // block.strides[1]
            covered[z0 : z0 + piece.shape[0], y0 : y0 + piece.shape[1]] += 1
        assert np.all(covered == 2)


def test_more_threads_same_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    block = _block(9, (2, 80, 70))
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    monkeypatch.setitem(runtime._state, "threads", 2)
    _assert_same(fast.region_stats_raw(block), oracle.region_stats(block))


@pytest.mark.casa
@pytest.mark.skipif(not casatasks_available(), reason="casatasks (the 'casa' extra) is not installed")
def test_matches_casatasks_on_3c273(tmp_path: Path) -> None:
    path = decompress_demo("3c273_continuum.fits", tmp_path)
    image = open_fits_image(path)
    try:
        raw = image.source.read_raw()  # the memmap as stored: big-endian float32
        assert not raw.data.dtype.isnative
        got = fast.region_stats_raw(raw.data, bscale=raw.bscale, bzero=raw.bzero, blank=raw.blank)
    finally:
        image.close()
    casa = run_casa_task("imstat", imagename=str(path))
    assert got["npts"] == int(casa["npts"][0])
    rms = float(casa["rms"][0])
    for key in ("sum", "sumsq", "mean", "sigma", "rms", "min", "max", "median", "medabsdevmed", "q1", "q3",
                "quartile"):
        scale = rms * math.sqrt(got["npts"]) if key == "sum" else rms
        assert abs(got[key] - float(casa[key][0])) <= 2e-6 * max(abs(float(casa[key][0])), scale), key
    # CASA positions run over all four FITS axes (RA, Dec, Stokes, frequency); ours are (z, y, x)
    assert [got["minpos"][2], got["minpos"][1]] == [int(v) for v in casa["minpos"][:2]]
    assert [got["maxpos"][2], got["maxpos"][1]] == [int(v) for v in casa["maxpos"][:2]]

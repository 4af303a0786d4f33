"""CPU reference tests for ``cpu_fallback.noise.channel_mad`` against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import mad_std, median_absolute_deviation
from scipy.stats import norm

from cpu_fallback import noise

#: The contract's robust-sigma factor and astropy's exact one, 1 / Phi^-1(3/4).
SIGMA_FACTOR = 1.4826
ASTROPY_FACTOR = 1.0 / norm.ppf(0.75)


def _noisy_cube(seed: int = 7, shape: tuple[int, int, int] = (6, 9, 11)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cube = rng.normal(loc=0.3, scale=0.1, size=shape)
    cube[rng.random(shape) < 0.2] = np.nan
    return cube


def test_matches_nanmedian_and_astropy_per_channel() -> None:
    cube = _noisy_cube()
    cube[2, 0, 0] = np.inf  # +-inf is blank too
    cube[3, 1, 1] = -np.inf
    median, mad = noise.channel_mad(cube)
    assert median.dtype == np.float64 and mad.dtype == np.float64
    assert median.shape == mad.shape == (cube.shape[0],)
    for z in range(cube.shape[0]):
        plane = np.where(np.isfinite(cube[z]), cube[z], np.nan)
        assert median[z] == pytest.approx(np.nanmedian(plane), rel=1e-14)
        ref_mad = median_absolute_deviation(plane, ignore_nan=True)
        assert mad[z] == pytest.approx(ref_mad, rel=1e-14)
        # sigma = 1.4826 MAD equals astropy's mad_std up to the scale constant only.
        ref_sigma = mad_std(plane, ignore_nan=True) * (SIGMA_FACTOR / ASTROPY_FACTOR)
        assert SIGMA_FACTOR * mad[z] == pytest.approx(ref_sigma, rel=1e-13)


def test_float32_input_is_promoted_to_float64() -> None:
    cube = _noisy_cube(3).astype(np.float32)
    median, mad = noise.channel_mad(cube)
    ref = cube.astype(np.float64)
    for z in range(cube.shape[0]):
        assert median[z] == pytest.approx(np.nanmedian(ref[z]), rel=1e-15)
        assert mad[z] == pytest.approx(median_absolute_deviation(ref[z], ignore_nan=True), rel=1e-15)


def test_hand_computed_odd_and_even_counts() -> None:
    cube = np.full((2, 2, 3), np.nan)
    cube[0].flat[:5] = [1.0, 2.0, 4.0, 8.0, 100.0]  # median 4; |dev| 3,2,0,4,96 -> MAD 3
    cube[1].flat[:4] = [1.0, 2.0, 4.0, 10.0]  # median 3; |dev| 2,1,1,7 -> MAD 1.5
    median, mad = noise.channel_mad(cube)
    np.testing.assert_array_equal(median, [4.0, 3.0])
    np.testing.assert_array_equal(mad, [3.0, 1.5])


def test_channels_with_fewer_than_two_finite_pixels_are_nan() -> None:
    cube = np.full((4, 3, 3), np.nan, dtype=np.float32)
    cube[1, 2, 2] = 5.0  # one finite pixel
    cube[2, 0, :2] = [1.0, 3.0]  # two: median 2, MAD 1
    cube[3, 1, 1] = np.inf
    median, mad = noise.channel_mad(cube)
    np.testing.assert_array_equal(np.isnan(median), [True, True, False, True])
    np.testing.assert_array_equal(np.isnan(mad), [True, True, False, True])
    assert (median[2], mad[2]) == (2.0, 1.0)


def test_constant_channel_has_zero_mad() -> None:
    cube = np.full((1, 4, 4), 2.5, dtype=np.float32)
    median, mad = noise.channel_mad(cube)
    assert (median[0], mad[0]) == (2.5, 0.0)


def test_chunked_along_z_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    cube = _noisy_cube(11, (13, 8, 6))
    cube[5] = np.nan
    whole = noise.channel_mad(cube)
    # Split by the caller into channel ranges ...
    parts = [noise.channel_mad(cube[a:b]) for a, b in [(0, 4), (4, 5), (5, 13)]]
    for i in range(2):
        np.testing.assert_array_equal(np.concatenate([p[i] for p in parts]), whole[i])
    # ... and inside the kernel, with one channel per slab.
    monkeypatch.setattr(noise, "_CHUNK_ELEMENTS", 1)
    for got, want in zip(noise.channel_mad(cube), whole, strict=True):
        np.testing.assert_array_equal(got, want)


def test_reads_a_memmap(tmp_path) -> None:
    cube = _noisy_cube(5).astype(np.float32)
    mm = np.memmap(tmp_path / "c.dat", dtype=np.float32, mode="w+", shape=cube.shape)
    mm[:] = cube
    mm.flush()
    for got, want in zip(noise.channel_mad(mm), noise.channel_mad(cube), strict=True):
        np.testing.assert_array_equal(got, want)
    del mm


def test_zero_as_blank_excludes_zeros_only_when_they_are_the_majority() -> None:
    cube = np.zeros((2, 2, 4))
    cube[0, 0] = [1.0, 2.0, 3.0, 10.0]  # 4 of 8 zeros: not a majority, zeros kept
    cube[1, 0, :3] = [1.0, 2.0, 4.0]  # 5 of 8 zeros: excluded
    median, mad = noise.channel_mad(cube, zero_as_blank=True)
    assert (median[0], mad[0]) == (0.5, 0.5)
    assert (median[1], mad[1]) == (2.0, 1.0)
    plain = noise.channel_mad(cube)
    assert (plain[0][1], plain[1][1]) == (0.0, 0.0)


def test_empty_and_bad_shapes() -> None:
    median, mad = noise.channel_mad(np.zeros((3, 0, 4), dtype=np.float32))
    assert np.isnan(median).all() and np.isnan(mad).all() and median.shape == (3,)
    with pytest.raises(ValueError, match="cube"):
        noise.channel_mad(np.zeros((3, 4), dtype=np.float32))

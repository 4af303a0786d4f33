"""Noise fast path (selection, threads over channels) against the NumPy oracle and astropy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import mad_std, median_absolute_deviation

from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.noise import channel_mad
from cpu_fallback.noise import channel_mad as oracle


def _cube(seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cube = rng.normal(0.5, 2.0, (23, 31, 27)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.1] = np.nan
    cube[2] = np.nan  # no pixel
    cube[3] = np.nan
    cube[3, 0, 0] = 1.0  # one pixel: fewer than 2
    cube[4] = 0.0
    cube[4, 0, :6] = np.arange(1, 7)  # mostly zeros (zero_as_blank drops them)
    cube[5] = np.round(cube[5])  # ties
    cube[6, :, :] = np.inf
    cube[6, 1, :4] = [1, 2, 3, 5]  # even count: mean of the middle pair
    cube[7, 0, 0] = -np.inf
    return cube


@pytest.mark.parametrize("zero_as_blank", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_equals_oracle_exactly(zero_as_blank: bool, threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtime._state, "threads", threads)
    monkeypatch.setattr(runtime, "MIN_VOXELS_PER_THREAD", 1)
    cube = _cube()
    med, mad = channel_mad(cube, zero_as_blank=zero_as_blank)
    rmed, rmad = oracle(cube, zero_as_blank=zero_as_blank)
    np.testing.assert_array_equal(med, rmed)
    np.testing.assert_array_equal(mad, rmad)
    assert np.isnan(med[2]) and np.isnan(med[3]) and np.isnan(mad[3])
    assert med[6] == 2.5 and mad[6] == 1.0  # |{1,2,3,5} - 2.5| = {1.5, .5, .5, 2.5}: median 1.0


def test_against_astropy() -> None:
    cube = _cube(5)
    med, mad = channel_mad(cube.astype(np.float64))
    for z, plane in enumerate(cube.astype(np.float64)):
        finite = plane[np.isfinite(plane)]
        if finite.size < 2:
            assert np.isnan(mad[z])
            continue
        assert med[z] == pytest.approx(np.median(finite), rel=1e-12, abs=1e-12)
        assert mad[z] == pytest.approx(median_absolute_deviation(finite), rel=1e-12, abs=1e-12)
        assert mad[z] / 0.6744897501960817 == pytest.approx(mad_std(finite), rel=1e-12, abs=1e-12)


def test_strided_and_bad_input() -> None:
    cube = _cube(6)
    view = np.transpose(np.ascontiguousarray(np.transpose(cube, (1, 2, 0))), (2, 0, 1))
    np.testing.assert_array_equal(channel_mad(view)[1], oracle(cube)[1])
    with pytest.raises(ValueError, match="floating"):
        channel_mad(cube[0])
    med, mad = channel_mad(np.empty((3, 0, 4), np.float32))
    assert med.shape == (3,) and np.isnan(mad).all()

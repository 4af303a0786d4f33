"""Compiled baseline (one accumulation pass, per-pixel solve, streamed residual) against the NumPy oracle,
hand-computed spectra and numpy.polynomial least squares in raw channel numbers."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback import baseline as oracle
from cpu_fallback.compiled import baseline as fast
from kernel_common.baseline_model import outcome_counts


def _cube(seed: int = 3, shape: tuple[int, int, int] = (48, 13, 17)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    nz = shape[0]
    c = np.arange(nz, dtype=np.float64)[:, None, None]
    yy, xx = np.mgrid[0 : shape[1], 0 : shape[2]]
    cube = 0.4 + 0.02 * (c - 10) * (1 + 0.1 * xx) - 3e-4 * (c - 20) ** 2 * (yy % 3)
    cube = cube + np.exp(-0.5 * ((c - 24) / 3.0) ** 2) + rng.normal(0, 0.05, shape)
    cube = cube.astype(np.float32)
    cube[rng.random(shape) < 0.08] = np.nan
    cube[30:, 0, 0] = np.nan  # usable line-free channels stop before the finite span: order 0
    cube[:, 0, 1] = np.nan  # no data: unchanged
    cube[:, 0, 2] = np.nan
    cube[[3, 40], 0, 2] = 1.0  # 2 usable samples: order 0
    cube[:, 0, 3] = np.nan
    cube[[3, 5, 40], 0, 3] = [1.0, 2.0, 3.0]  # 3 usable samples: at most order 1
    cube[5, 1, :] = np.inf  # blank, not data
    return cube


LF = np.r_[0:12, 36:48]


def _compare(cube: np.ndarray, stored: np.ndarray, order: int, method: str, **scaling: float) -> dict[str, int]:
    got, part, span = fast.subtract_baseline_raw(stored, LF, order=order, method=method, **scaling)
    want, wpart = oracle.subtract_baseline(cube, LF, order=order, method=method)
    assert got.dtype == np.float32 and got.shape == cube.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = np.isfinite(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= 1e-6 * (np.abs(cube[ok]) + np.abs(want[ok])))
    np.testing.assert_array_equal(part[2:], wpart[2:])  # n and the outcome counts: integers
    np.testing.assert_allclose(part[:2], wpart[:2], rtol=1e-10)
    assert span[0] == np.nanmin(got) and span[1] == np.nanmax(got)
    return outcome_counts(part, order, method)


@pytest.mark.parametrize(("method", "order"), [("polynomial", 0), ("polynomial", 1), ("polynomial", 2),
                                               ("polynomial", 4), ("median", 0)])
def test_equals_oracle_with_every_fallback(method: str, order: int) -> None:
    cube = _cube()
    counts = _compare(cube, cube, order, method)
    assert counts["unchanged"] == 1
    if method == "polynomial" and order >= 2:
        assert counts["order_1"] >= 1 and counts["order_0"] >= 2  # pixels 0, 2 (order 0) and 3 (order 1)


def test_stored_types() -> None:
    cube = _cube(5)
    _compare(cube, cube.astype(">f4"), 1, "polynomial")
    rng = np.random.default_rng(1)
    ints = rng.integers(-2000, 2000, cube.shape).astype(">i2")
    ints[rng.random(cube.shape) < 0.05] = -32768
    values = ints.astype(np.float32)
    values[ints == -32768] = np.nan
    values = values * np.float32(0.01) + np.float32(-1.5)
    _compare(values, ints, 2, "polynomial", bscale=0.01, bzero=-1.5, blank=-32768)
    view = cube.astype(">f4")[:, 2:11, 3:15]  # a y-slab/x-range view of a memmap
    _compare(np.ascontiguousarray(view, dtype=np.float32), view, 1, "polynomial")


def test_against_numpy_polyfit_in_channel_numbers() -> None:
    """Least squares does not depend on the basis: a monomial fit in raw channel numbers (CASA imcontsub)."""
    cube = _cube(8)[:, 3:6, 4:9]
    got, _, _ = fast.subtract_baseline_raw(cube, LF, order=2)
    c = np.arange(cube.shape[0], dtype=np.float64)
    for y in range(cube.shape[1]):
        for x in range(cube.shape[2]):
            s = cube[:, y, x].astype(np.float64)
            use = np.isin(np.arange(s.size), LF) & np.isfinite(s)
            coef = np.polynomial.polynomial.polyfit(c[use], s[use], 2)
            ref = s - np.polynomial.polynomial.polyval(c, coef)
            fin = np.isfinite(s)
            np.testing.assert_allclose(got[fin, y, x], ref[fin], atol=2e-6 * np.abs(s[fin]).max())


def test_hand_computed_fallbacks() -> None:
    z = np.arange(20, dtype=np.float64)
    slope = (0.5 + 0.1 * z).astype(np.float32)
    cube = np.repeat(slope[:, None, None], 4, axis=2)
    lf = np.r_[0:4, 16:20]
    cube[14:, 0, 1] = np.nan
    cube[[0, 1, 2, 16, 17, 18], 0, 2] = np.nan
    cube[[0, 1, 2, 3, 16, 17, 18], 0, 3] = np.nan
    res, part, _ = fast.subtract_baseline_raw(cube, lf, order=1)
    np.testing.assert_allclose(res[:, 0, 0], 0.0, atol=1e-6)  # a line, bracketed: exact
    np.testing.assert_allclose(res[:14, 0, 1], slope[:14] - slope[:4].astype(np.float64).mean(), atol=1e-6)
    fin2 = np.isfinite(cube[:, 0, 2])
    np.testing.assert_allclose(res[fin2, 0, 2], slope[fin2] - (slope[3] + np.float64(slope[19])) / 2, atol=1e-6)
    fin3 = np.isfinite(cube[:, 0, 3])
    np.testing.assert_array_equal(res[fin3, 0, 3], cube[fin3, 0, 3])
    assert outcome_counts(part, 1, "polynomial") == {"order_1": 1, "order_0": 2, "unchanged": 1}
    med, mpart, _ = fast.subtract_baseline_raw(cube, lf, method="median")
    np.testing.assert_allclose(med[:, 0, 0], slope - np.median(slope[lf].astype(np.float64)), atol=1e-6)
    assert outcome_counts(mpart, 0, "median") == {"order_0": 3, "unchanged": 1}


def test_bad_arguments_as_the_oracle() -> None:
    cube = _cube()
    for kwargs, match in (({"order": -1}, "order"), ({"method": "spline"}, "method"), ({"order": 30}, "too few")):
        with pytest.raises(ValueError, match=match):
            fast.subtract_baseline_raw(cube, LF, **kwargs)
    with pytest.raises(ValueError, match="line-free"):
        fast.subtract_baseline_raw(cube, [0, 99])
    with pytest.raises(ValueError, match="cube"):
        fast.subtract_baseline_raw(cube[0], LF)

"""Moment maps, API-reference convention (cpu_fallback.moments): closed-form line cubes,
high-velocity accuracy, masking, blanks, chunking and argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from cpu_fallback.moments import SUPPORTED_ORDERS, moment_maps

ALL = (0, 1, 2, 3, 4, 5, 6, 8, 10)


def _gauss_raw(m: float, s: float, k: int) -> float:
    """E[X^k] for X ~ N(m, s^2), k <= 5."""
    return [1.0, m, m**2 + s**2, m**3 + 3 * m * s**2, m**4 + 6 * m**2 * s**2 + 3 * s**4,
            m**5 + 10 * m**3 * s**2 + 15 * m * s**4][k]  # fmt: skip


def _mixture(amps, centres, sigmas):
    """Closed-form M0..M5 of a sum of Gaussian lines ``sum a exp(-(v-c)^2 / 2 s^2)``."""
    weights = [a * s * np.sqrt(2 * np.pi) for a, s in zip(amps, sigmas, strict=True)]
    m0 = sum(weights)
    mean = sum(w * c for w, c in zip(weights, centres, strict=True)) / m0
    mu = [sum(w * _gauss_raw(c - mean, s, k) for w, c, s in zip(weights, centres, sigmas, strict=True)) / m0
          for k in range(6)]  # fmt: skip
    sig = np.sqrt(mu[2])
    return {0: m0, 1: mean, 2: mu[2], 3: mu[3] / sig**3, 4: mu[4] / sig**4 - 3, 5: mu[5] / sig**5}


def _line_cube(v, amps, centres, sigmas, ny=3, nx=4):
    prof = sum(a * np.exp(-0.5 * ((v - c) / s) ** 2) for a, c, s in zip(amps, centres, sigmas, strict=True))
    return np.broadcast_to(prof[:, None, None], (v.size, ny, nx)).astype(np.float32)


def _reference(cube, v, w, threshold=None):
    """Brute-force float64 moments (masked arrays), the formulas of the API reference."""
    x = cube.astype(np.float64)
    keep = np.isfinite(x) & (x >= threshold if threshold is not None else True)
    x = np.where(keep, x, 0.0)
    W, V = w[:, None, None], v[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return _reference_sums(x, keep, W, V)


def _reference_sums(x, keep, W, V):
    m0 = (x * W).sum(0)
    m1 = (x * V * W).sum(0) / m0
    mu = {k: (x * (V - m1) ** k * W).sum(0) / m0 for k in (2, 3, 4, 5)}
    sig = np.sqrt(mu[2])
    kw = (keep * W).sum(0)
    out = {0: m0, 1: m1, 2: mu[2], 3: mu[3] / sig**3, 4: mu[4] / sig**4 - 3, 5: mu[5] / sig**5,
           6: np.sqrt((x**2 * W).sum(0) / kw),
           8: np.where(keep, x, -np.inf).max(0), 10: np.where(keep, x, np.inf).min(0)}  # fmt: skip
    none = ~keep.any(0)
    for k in out:
        out[k] = np.where(none, np.nan, out[k])
    return out


def test_single_gaussian_closed_form() -> None:
    v = np.arange(-400.0, 400.0, 2.0)  # km/s, line well inside the band, dv << sigma
    w = np.full(v.size, 2.0)
    cube = _line_cube(v, [0.8], [37.0], [21.0])
    r = moment_maps(cube, v, w, orders=ALL)
    assert set(r) == set(ALL) and all(m.dtype == np.float32 and m.shape == (3, 4) for m in r.values())
    np.testing.assert_allclose(r[0], 0.8 * 21.0 * np.sqrt(2 * np.pi), rtol=2e-6)
    np.testing.assert_allclose(r[1], 37.0, rtol=1e-7)
    np.testing.assert_allclose(r[2], 21.0**2, rtol=2e-6)
    for k in (3, 4, 5):
        np.testing.assert_allclose(r[k], 0.0, atol=2e-5)
    rms = np.sqrt(0.8**2 * 21.0 * np.sqrt(np.pi) / (v.size * 2.0))
    np.testing.assert_allclose(r[6], rms, rtol=2e-6)
    assert np.all(r[8] == cube.max()) and np.all(r[10] == cube.min())


@pytest.mark.parametrize("vsys", [0.0, 10_000.0])
def test_skewed_profile_closed_form(vsys: float) -> None:
    # two blended lines: skewed, heavy-tailed profile with known moments (5 km/s channels)
    v = vsys + np.arange(-640.0, 640.0, 5.0)
    w = np.full(v.size, 5.0)
    amps, centres, sigmas = [1.0, 0.35], [vsys - 20.0, vsys + 60.0], [25.0, 40.0]
    exp = _mixture(amps, centres, sigmas)
    r = moment_maps(_line_cube(v, amps, centres, sigmas), v, w, orders=ALL)
    np.testing.assert_allclose(r[0], exp[0], rtol=2e-6)
    np.testing.assert_allclose(r[1], exp[1], rtol=1e-7, atol=1e-4)
    np.testing.assert_allclose(r[2], exp[2], rtol=2e-6)
    for k in (3, 4, 5):
        assert abs(exp[k]) > 0.05
        np.testing.assert_allclose(r[k], exp[k], rtol=1e-5)


def test_high_velocity_keeps_its_digits() -> None:
    """A line at 10,000 km/s with 5 km/s channels: a one-pass float32 sum of I v^2 fails."""
    v = 10_000.0 + np.arange(-300.0, 300.0, 5.0) + 250.0  # band not centred on the line
    w = np.full(v.size, 5.0)
    amps, centres, sigmas = [1.0, 0.5], [10_230.0, 10_290.0], [15.0, 30.0]
    exp = _mixture(amps, centres, sigmas)
    cube = _line_cube(v, amps, centres, sigmas)
    r = moment_maps(cube, v, w, orders=(2, 3, 4, 5))
    np.testing.assert_allclose(r[2], exp[2], rtol=2e-6)
    for k in (3, 4, 5):
        np.testing.assert_allclose(r[k], exp[k], rtol=1e-5, atol=1e-6)
    # the naive single-pass float32 variance is far off: the test above is a real test
    x, vv, ww = cube[:, 0, 0], v.astype(np.float32), w.astype(np.float32)
    m0 = np.sum(x * ww, dtype=np.float32)
    naive = np.sum(x * vv * vv * ww, dtype=np.float32) / m0 - (np.sum(x * vv * ww, dtype=np.float32) / m0) ** 2
    assert abs(naive - exp[2]) / exp[2] > 1e-3


def test_narrow_line_far_from_the_band_centre() -> None:
    """A line 2 channels wide, 120 channels off the band centre: M2 = S2/S0 - M1^2 cancels by a
    factor (120/2)^2 = 3600, still within float32 rounding (the sums are float64)."""
    v = 1_500.0 + 5.0 * np.arange(512)
    w = np.full(v.size, 5.0)
    centre = v.mean() + 600.0
    exp = _mixture([2.0], [centre], [10.0])
    r = moment_maps(_line_cube(v, [2.0], [centre], [10.0]), v, w, orders=(0, 1, 2, 8))
    np.testing.assert_allclose(r[0], exp[0], rtol=2e-6)
    np.testing.assert_allclose(r[1], exp[1], rtol=1e-7)
    np.testing.assert_allclose(r[2], exp[2], rtol=2e-6)


def test_matches_bruteforce_reference_with_irregular_axis() -> None:
    rng = np.random.default_rng(7)
    nz, ny, nx = 40, 9, 11
    v = np.cumsum(rng.uniform(0.5, 2.0, nz))[::-1] * 3.0  # decreasing, non-uniform
    w = np.abs(np.gradient(v))
    cube = rng.uniform(0.1, 2.0, (nz, ny, nx)).astype(np.float32)
    r = moment_maps(cube, v, w, orders=ALL)
    ref = _reference(cube, v, w)
    for k in ALL:
        np.testing.assert_allclose(r[k], ref[k], rtol=2e-6, atol=1e-6, err_msg=f"order {k}")


def test_threshold_keeps_voxels_at_or_above_it() -> None:
    rng = np.random.default_rng(1)
    nz, ny, nx = 30, 6, 7
    v, w = np.linspace(-50.0, 50.0, nz), np.full(nz, 100.0 / 29)
    cube = rng.normal(0.2, 0.5, (nz, ny, nx)).astype(np.float32)
    cube[4, 0, 0] = np.float32(0.25)  # exactly at the threshold: kept
    r = moment_maps(cube, v, w, orders=ALL, threshold=0.25)
    ref = _reference(cube, v, w, threshold=0.25)
    for k in ALL:
        np.testing.assert_allclose(r[k], ref[k], rtol=5e-6, atol=1e-5, err_msg=f"order {k}")
    assert r[10][0, 0] == np.float32(0.25)
    # a pixel with nothing above the threshold is blank in every order
    cube[:, 1, 1] = 0.0
    r = moment_maps(cube, v, w, orders=ALL, threshold=0.25)
    assert all(np.isnan(r[k][1, 1]) for k in ALL)


def test_blank_rules() -> None:
    nz = 20
    v, w = np.arange(nz, dtype=np.float64), np.ones(nz)
    cube = np.ones((nz, 2, 4), dtype=np.float32)
    cube[:, 0, 0] = np.nan  # all blank
    cube[:, 0, 1] = 0.0  # M0 == 0
    cube[:, 0, 2] = np.nan  # a single kept voxel: sigma == 0
    cube[7, 0, 2] = 2.0
    cube[3, 0, 3], cube[5, 0, 3], cube[6, 0, 3] = np.inf, -np.inf, np.nan  # excluded voxels
    cube[:, 1, 0] = np.where(np.arange(nz) < 10, 1.0, -1.0)  # M0 == 0 with signal
    r = moment_maps(cube, v, w, orders=ALL)
    assert all(np.isnan(r[k][0, 0]) for k in ALL)
    assert r[0][0, 1] == 0 and all(np.isnan(r[k][0, 1]) for k in (1, 2, 3, 4, 5))
    assert r[6][0, 1] == 0 and r[8][0, 1] == 0 and r[10][0, 1] == 0
    assert (r[0][0, 2], r[1][0, 2], r[2][0, 2]) == (2.0, 7.0, 0.0)
    assert all(np.isnan(r[k][0, 2]) for k in (3, 4, 5))
    assert (r[6][0, 2], r[8][0, 2], r[10][0, 2]) == (2.0, 2.0, 2.0)
    ref = _reference(np.where(np.isfinite(cube), cube, np.nan), v, w)
    for k in ALL:
        np.testing.assert_allclose(r[k][0, 3], ref[k][0, 3], rtol=1e-6, atol=1e-6)
    assert r[0][1, 0] == 0 and np.isnan(r[1][1, 0])


def test_zero_width_channels_and_blanks() -> None:
    nz = 16
    v, w = np.arange(nz, dtype=np.float64), np.ones(nz)
    w[::3] = 0.0
    cube = np.ones((nz, 1, 3), dtype=np.float32)
    cube[:, 0, 0] = np.nan
    cube[0, 0, 1] = np.nan  # blank in a zero-width channel: excluded, and not a NaN sum
    cube[3, 0, 2] = np.inf
    r = moment_maps(cube, v, w, orders=ALL)
    assert all(np.isnan(r[k][0, 0]) for k in ALL)
    ref = _reference(cube, v, w)
    for k in (0, 1, 2, 6, 8, 10):
        np.testing.assert_allclose(r[k][0, 1:], ref[k][0, 1:], rtol=1e-6, err_msg=f"order {k}")


def _noisy_cube(rng, nz, ny, nx):
    cube = rng.standard_normal((nz, ny, nx)).astype(np.float32)
    cube[:, 1, 2] = np.nan
    cube[rng.integers(0, nz, 40), rng.integers(0, ny, 40), rng.integers(0, nx, 40)] = np.nan
    cube[2, 3, 4] = np.inf
    return cube


@pytest.mark.parametrize("threshold", [None, 0.3])
def test_chunked_equals_whole_exactly(threshold: float | None) -> None:
    rng = np.random.default_rng(11)
    nz, ny, nx = 64, 37, 150
    cube = _noisy_cube(rng, nz, ny, nx)
    v, w = 1000.0 + 5.0 * np.arange(nz), np.full(nz, 5.0)
    whole = moment_maps(cube, v, w, orders=ALL, threshold=threshold)
    for cuts in ([0, 1, 2, 37], [0, 13, 14, 30, 37], list(range(38))):
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            part = moment_maps(cube[:, a:b], v, w, orders=ALL, threshold=threshold)
            for k in ALL:
                np.testing.assert_array_equal(part[k], whole[k][a:b], err_msg=f"order {k} rows {a}:{b}")


def test_chunked_equals_whole_for_deep_cube_tiled_in_x() -> None:
    rng = np.random.default_rng(5)
    nz, ny, nx = 2100, 5, 150  # deep: rows are split into x tiles
    cube = _noisy_cube(rng, nz, ny, nx)
    v, w = np.linspace(-3e3, 3e3, nz), np.full(nz, 6e3 / (nz - 1))
    whole = moment_maps(cube, v, w, orders=(0, 1, 2, 8, 10))
    ref = _reference(cube, v, w)
    for k in (0, 8, 10):
        np.testing.assert_allclose(whole[k], ref[k], rtol=1e-6, atol=1e-5)
    for a in range(ny):
        part = moment_maps(cube[:, a : a + 1], v, w, orders=(0, 1, 2, 8, 10))
        for k in part:
            np.testing.assert_array_equal(part[k], whole[k][a : a + 1])


def test_many_blocks_against_bruteforce_and_chunked() -> None:
    """A plane larger than one block (several blocks and sub-blocks, rows padded to 64 pixels):
    every order against the float64 reference, and y-slabs cut across block boundaries."""
    rng = np.random.default_rng(3)
    nz, ny, nx = 40, 70, 300
    v = np.linspace(-200.0, 200.0, nz)
    w = np.full(nz, 400.0 / 39)
    yy, xx = np.mgrid[:ny, :nx]
    line = np.exp(-0.5 * ((v[:, None, None] - 2.0 * (xx - 150) / 3.0) / (20.0 + yy / 7.0)) ** 2)
    cube = (line + rng.normal(0.0, 0.05, (nz, ny, nx))).astype(np.float32)
    cube[rng.random(cube.shape) < 0.01] = np.nan
    cube[:, 5:9, 40:60] = np.nan
    for threshold in (None, 0.2):
        whole = moment_maps(cube, v, w, orders=ALL, threshold=threshold)
        ref = _reference(cube, v, w, threshold=threshold)
        for k in ALL:
            np.testing.assert_array_equal(np.isnan(whole[k]), np.isnan(ref[k]), err_msg=f"order {k}")
            np.testing.assert_allclose(whole[k], ref[k], rtol=2e-5, atol=1e-5, err_msg=f"order {k}")
        for a, b in ((0, 23), (23, 51), (51, 70)):
            part = moment_maps(cube[:, a:b], v, w, orders=ALL, threshold=threshold)
            for k in ALL:
                np.testing.assert_array_equal(part[k], whole[k][a:b], err_msg=f"order {k} rows {a}:{b}")


def test_order0_alone_is_float32_summed_and_cancelled_pixels_exact() -> None:
    """Order 0 without orders 1-5 is summed in float32: within float32 rounding of sum |I| dv of
    the float64 sum (order 0 with order 1); a pixel whose sum cancels is recomputed exactly."""
    rng = np.random.default_rng(8)
    nz, ny, nx = 256, 12, 70
    v, w = np.arange(nz, dtype=np.float64), np.full(nz, 5.0)
    cube = rng.normal(0.0, 1.0, (nz, ny, nx)).astype(np.float32)
    cube[rng.random(cube.shape) < 0.01] = np.nan
    cube[:, 3, 3] = np.where(np.arange(nz) % 2, 1.0, -1.0) * (1.0 + np.arange(nz) // 2)  # sum 0
    cube[0, 4, 4] += np.float32(1e-3) - cube[:, 4, 4][np.isfinite(cube[:, 4, 4])].sum()  # sum 1e-3
    alone = moment_maps(cube, v, w, orders=(0,))[0]
    with_m1 = moment_maps(cube, v, w, orders=(0, 1))[0]
    x = np.where(np.isfinite(cube), cube, 0.0).astype(np.float64)
    exact = (x * 5.0).sum(0)
    abs_sum = (np.abs(x) * 5.0).sum(0)
    np.testing.assert_allclose(with_m1, exact, rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(alone - exact) <= 4 * np.finfo(np.float32).eps * abs_sum + 1e-6 * np.abs(exact))
    assert alone[3, 3] == 0.0
    np.testing.assert_allclose(alone[4, 4], exact[4, 4], rtol=1e-6)


@pytest.mark.parametrize("threshold", [None, 0.5])
def test_extrema_alone_read_straight_from_the_cube(threshold: float | None) -> None:
    rng = np.random.default_rng(4)
    nz, ny, nx = 33, 5, 70
    cube = rng.normal(0.0, 1.0, (nz, ny, nx)).astype(np.float32)
    cube[:, 0, 0] = np.nan  # blank
    cube[3, 1, 1], cube[4, 1, 2] = np.inf, -np.inf  # excluded voxels
    cube[:, 2, 3] = np.nan
    cube[5, 2, 3] = -np.inf  # only -inf: blank
    cube[:, 3, 4] = -2.0  # nothing at or above 0.5
    v, w = np.arange(nz, dtype=np.float64), np.ones(nz)
    ref = _reference(np.where(np.isinf(cube), np.nan, cube), v, w, threshold=threshold)
    for orders in ((8,), (10,), (8, 10)):
        r = moment_maps(cube, v, w, orders=orders, threshold=threshold)
        for k in orders:
            np.testing.assert_array_equal(r[k], ref[k].astype(np.float32), err_msg=f"order {k}")


def test_threshold_at_or_below_zero_and_zero_widths() -> None:
    """Kept weight / count paths: thresholds <= 0 (kept values may cancel) and zero widths."""
    rng = np.random.default_rng(6)
    nz, ny, nx = 30, 4, 9
    v = np.linspace(-50.0, 50.0, nz)
    w = np.full(nz, 100.0 / 29)
    w[::4] = 0.0
    cube = rng.normal(0.0, 1.0, (nz, ny, nx)).astype(np.float32)
    cube[:, 0, 0] = -5.0  # nothing kept at any threshold below
    cube[rng.random(cube.shape) < 0.05] = np.nan
    for threshold in (-0.5, 0.0, 0.3):
        for orders in ((0,), (1,), (0, 1, 2), (6,), ALL):
            r = moment_maps(cube, v, w, orders=orders, threshold=threshold)
            ref = _reference(cube, v, w, threshold=threshold)
            for k in orders:
                np.testing.assert_array_equal(np.isnan(r[k]), np.isnan(ref[k]), err_msg=f"order {k} t={threshold}")
                np.testing.assert_allclose(r[k], ref[k], rtol=5e-5, atol=1e-5, err_msg=f"order {k} t={threshold}")


def test_read_only_memmap_input_is_not_modified(tmp_path) -> None:
    rng = np.random.default_rng(2)
    data = _noisy_cube(rng, 24, 8, 9)
    path = tmp_path / "cube.f32"
    data.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=data.shape)
    v, w = np.arange(24.0), np.ones(24)
    r = moment_maps(mm[:, 2:6], v, w, orders=ALL, threshold=-0.5)
    ref = moment_maps(np.array(data[:, 2:6]), v, w, orders=ALL, threshold=-0.5)
    for k in ALL:
        np.testing.assert_array_equal(r[k], ref[k])
    np.testing.assert_array_equal(np.asarray(mm), data)


def test_float64_cube_and_single_channel() -> None:
    cube = np.full((1, 2, 2), 3.0)
    r = moment_maps(cube, [5.0], [2.0], orders=ALL)
    assert (r[0] == 6.0).all() and (r[1] == 5.0).all() and (r[2] == 0.0).all()
    assert all(np.isnan(r[k]).all() for k in (3, 4, 5))
    assert (r[6] == 3.0).all() and (r[8] == 3.0).all() and (r[10] == 3.0).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"orders": (7,)}, "orders"),
        ({"orders": ()}, "orders"),
        ({"orders": (0,), "threshold": float("nan")}, "threshold"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        moment_maps(np.zeros((4, 2, 2), np.float32), np.arange(4.0), np.ones(4), **kwargs)


def test_bad_axes() -> None:
    cube = np.zeros((4, 2, 2), np.float32)
    with pytest.raises(ValueError):
        moment_maps(cube, np.arange(3.0), np.ones(4), orders=(0,))
    with pytest.raises(ValueError):
        moment_maps(cube, np.arange(4.0), -np.ones(4), orders=(0,))
    with pytest.raises(ValueError):
        moment_maps(np.zeros((4, 4), np.float32), np.arange(4.0), np.ones(4), orders=(0,))
    assert frozenset(ALL) == SUPPORTED_ORDERS

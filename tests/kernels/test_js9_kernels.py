"""JS9 analysis kernels (``cpu_fallback`` stats / fit2d / contours / region_flux): definitions,
chunked-equals-whole, and contours against scikit-image on the smoothed image."""

from __future__ import annotations

import math
from functools import reduce

import numpy as np
import pytest

from cpu_fallback import contours, fit2d, region_flux, stats
from tests.api.js9_support import decompress_demo, plane


def _brute(values: np.ndarray) -> dict[str, float]:
    v = np.sort(values[np.isfinite(values)].astype(np.float64))
    n = v.size
    med = 0.5 * (v[(n - 1) // 2] + v[n // 2])
    dev = np.sort(np.abs(v - med))
    return {"npts": n, "sum": v.sum(), "sumsq": (v * v).sum(), "sigma": v.std(ddof=1) if n > 1 else 0.0,
            "median": med, "q1": v[math.ceil(n / 4) - 1], "q3": v[math.ceil(3 * n / 4) - 1],
            "medabsdevmed": 0.5 * (dev[(n - 1) // 2] + dev[n // 2]), "min": v[0], "max": v[-1]}


def _block(seed: int, shape: tuple[int, int, int], ties: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    b = rng.normal(0.0, 1.0, shape).astype(np.float32)
    if ties:
        b = np.round(b * 2).astype(np.float32)
    b[rng.random(shape) < 0.15] = np.nan
    b.flat[rng.integers(0, b.size)] = np.inf
    b.flat[rng.integers(0, b.size)] = -np.inf
    return b


@pytest.mark.parametrize("seed", range(8))
def test_stats_definitions_and_chunking(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    shape = (int(rng.integers(1, 4)), int(rng.integers(5, 40)), int(rng.integers(5, 40)))
    block = _block(seed, shape, ties=seed % 2 == 0)
    mask = rng.random(shape[1:]) < 0.7 if seed % 3 else None
    whole = stats.stats_finalize(stats.stats_partial(block, mask))
    values = block[:, mask] if mask is not None else block
    ref = _brute(values)
    for key in ("npts", "median", "q1", "q3", "medabsdevmed", "min", "max"):
        assert whole[key] == ref[key], key
    for key in ("sum", "sumsq", "sigma"):
        assert whole[key] == pytest.approx(ref[key], rel=1e-12, abs=1e-12), key
    # first occurrence (C order over z, y, x) of the extremes
    flat = np.where(np.isfinite(block) & (True if mask is None else mask[None]), block, np.nan)
    assert whole["minpos"] == tuple(int(i) for i in np.unravel_index(np.nanargmin(flat), block.shape))
    assert whole["maxpos"] == tuple(int(i) for i in np.unravel_index(np.nanargmax(flat), block.shape))
    # chunked along y and along z, combined in either order, equals the whole
    for step in (1, 3, 7):
        parts = [stats.stats_partial(block[:, y0:y0 + step], None if mask is None else mask[y0:y0 + step],
                                     origin=(0, y0, 0)) for y0 in range(0, shape[1], step)]
        for ordered in (parts, parts[::-1]):
            chunked = stats.stats_finalize(reduce(stats.stats_combine, ordered))
            for key, value in whole.items():
                if key in ("sum", "sumsq", "mean", "sigma", "rms"):
                    assert chunked[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
                else:
                    assert chunked[key] == value, key
    zparts = [stats.stats_partial(block[z:z + 1], mask, origin=(z, 0, 0)) for z in range(shape[0])]
    assert stats.stats_finalize(reduce(stats.stats_combine, zparts))["medabsdevmed"] == whole["medabsdevmed"]


def test_stats_edge_cases() -> None:
    empty = stats.region_stats(np.full((1, 3, 3), np.nan, dtype=np.float32))
    assert empty["npts"] == 0 and math.isnan(empty["median"]) and empty["minpos"] == (-1, -1, -1)
    one = stats.region_stats(np.array([[[np.nan, 2.5]]], dtype=np.float32))
    assert one["npts"] == 1 and one["median"] == one["q1"] == one["q3"] == 2.5 and one["sigma"] == 0.0
    assert one["medabsdevmed"] == 0.0 and one["minpos"] == (0, 0, 1)
    zeros = stats.region_stats(np.array([[[-0.0, 0.0, 0.0, 1.0]]], dtype=np.float32))
    assert zeros["median"] == 0.0 and zeros["q1"] == 0.0
    with pytest.raises(ValueError, match="spectral, y, x"):
        stats.stats_partial(np.zeros((3, 3), dtype=np.float32))


def test_channel_sums() -> None:
    block = _block(5, (4, 9, 11), ties=False)
    mask = np.random.default_rng(1).random((9, 11)) < 0.5
    sums, counts = region_flux.channel_sums(block, mask)
    sel = block[:, mask]
    finite = np.isfinite(sel)
    np.testing.assert_allclose(sums, np.where(finite, sel, 0).sum(axis=1, dtype=np.float64), rtol=1e-12)
    assert counts.tolist() == finite.sum(axis=1).tolist() and sums.dtype == np.float64


# -- contours -------------------------------------------------------------------------------------


def test_smoothing_and_levels(tmp_path) -> None:
    from scipy.ndimage import gaussian_filter

    image = plane(decompress_demo("3c273_continuum.fits", tmp_path))
    smooth = contours.smooth_image(image, sigma=1.5)
    np.testing.assert_array_equal(smooth, gaussian_filter(image.astype(np.float64), 1.5))
    levels = contours.contour_levels(smooth, n_levels=7)
    np.testing.assert_array_equal(levels, np.linspace(smooth.min(), smooth.max(), 9)[1:-1])
    assert contours.contour_levels(np.zeros((4, 4)), n_levels=3).size == 0
    holes = image.copy()
    holes[100:110, 50:70] = np.nan
    smooth_holes = contours.smooth_image(holes, sigma=2.0)
    finite = np.isfinite(holes)
    num = gaussian_filter(np.where(finite, holes, 0).astype(np.float64), 2.0)
    den = gaussian_filter(finite.astype(np.float64), 2.0)
    np.testing.assert_allclose(smooth_holes[finite], (num / den)[finite], rtol=1e-12)
    assert np.isnan(smooth_holes[~finite]).all()


@pytest.mark.parametrize(("name", "z", "sigma"), [("3c273_continuum.fits", 0, 1.0), ("ngc5921_hi_cube.fits", 28, 1.5)])
def test_paths_equal_find_contours_on_the_smoothed_image(tmp_path, name: str, z: int, sigma: float) -> None:
    from skimage.measure import find_contours

    image = plane(decompress_demo(name, tmp_path), z)
    smooth = contours.smooth_image(image, sigma=sigma)
    levels = contours.contour_levels(smooth, n_levels=5)
    traced = contours.trace_contours(smooth, levels=levels)
    finite = np.isfinite(smooth)
    for level, paths in zip(levels, traced, strict=True):
        ref = find_contours(np.where(finite, smooth, 0.0), level, mask=None if finite.all() else finite)
        assert len(paths) == len(ref) > 0
        for ours, theirs in zip(paths, ref, strict=True):
            np.testing.assert_array_equal(ours, theirs)


# -- fit2d ----------------------------------------------------------------------------------------


def _gauss(shape: tuple[int, int], amp: float, x0: float, y0: float, sa: float, sb: float, th: float) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    u = (xx - x0) * math.cos(th) + (yy - y0) * math.sin(th)
    v = -(xx - x0) * math.sin(th) + (yy - y0) * math.cos(th)
    return amp * np.exp(-0.5 * (u * u / sa / sa + v * v / sb / sb))


def test_fit_recovers_batched_gaussians() -> None:
    truth = [(5.0, 30.3, 20.7, 4.0, 2.0, 0.4), (2.0, 25.1, 28.2, 3.0, 2.5, 2.6)]
    rng = np.random.default_rng(2)
    images = np.stack([_gauss((48, 64), *t) + rng.normal(0, 1e-3, (48, 64)) for t in truth]).astype(np.float32)
    images[0, :3, :] = np.nan
    p0 = np.stack([fit2d.estimate_gaussians(img) for img in images])
    out = fit2d.fit_gaussians(images, p0)
    assert out["converged"].all() and out["params"].shape == (2, 6)
    for got, want in zip(out["params"], truth, strict=True):
        np.testing.assert_allclose(got[:5], want[:5], rtol=2e-3, atol=2e-3)
        assert got[5] == pytest.approx(want[5] % math.pi, abs=2e-3)
    assert (out["errors"] > 0).all() and out["npix"][0] == 45 * 64
    model = fit2d.gaussian_model(out["params"], shape=(48, 64), n_components=1, background=False)
    np.testing.assert_allclose(model[1], _gauss((48, 64), *truth[1]), atol=5e-3)


def test_fit_background_components_and_mask() -> None:
    img = (_gauss((60, 80), 4.0, 20.0, 30.0, 3.0, 2.0, 0.3) + _gauss((60, 80), 2.5, 60.0, 25.0, 2.5, 2.5, 0.0)
           + 0.25).astype(np.float32)
    p0 = fit2d.estimate_gaussians(img, n_components=2, background=True)
    out = fit2d.fit_gaussians(img, p0, n_components=2, background=True)
    p = out["params"][0]
    assert p[-1] == pytest.approx(0.25, abs=1e-6)
    assert sorted([(p[1], p[2]), (p[7], p[8])]) == [pytest.approx((20.0, 30.0), abs=1e-5),
                                                   pytest.approx((60.0, 25.0), abs=1e-5)]
    mask = np.zeros(img.shape, dtype=bool)
    mask[15:45, 5:35] = True
    masked = fit2d.fit_gaussians(img, fit2d.estimate_gaussians(img, mask, background=True), mask, background=True)
    assert masked["params"][0][1:3] == pytest.approx([20.0, 30.0], abs=1e-4)
    with pytest.raises(ValueError, match="too few usable pixels"):
        fit2d.estimate_gaussians(np.full((3, 3), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="no positive peak"):
        fit2d.estimate_gaussians(-np.ones((8, 8), dtype=np.float32))

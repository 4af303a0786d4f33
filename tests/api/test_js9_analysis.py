"""``POST /api/visualization/js9/analysis`` on the native engine: the five tasks, regions, errors.

Numbers are checked against independent NumPy/SciPy/scikit-image computations here; the
comparison with casatasks is in ``test_js9_casa.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.services.js9 import casa_engine, native_engine
from app.settings import Settings
from tests.api.conftest import TOKEN, write_cube
from tests.api.js9_support import ANALYSIS, analyse, cube, decompress_demo, js9_app, plane

C3 = "3c273_continuum.fits.gz"  # relative to the first data root (the demo data)
C3_4D = "3c273_continuum_4d.fits.gz"
TASKS = ["imstat", "imfit", "imview", "specflux", "imval"]
VALID = str(TASKS)


@pytest.fixture
def js9_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(js9_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        yield client


@pytest.fixture
def c3_file(data_dir: Path) -> Path:
    return decompress_demo("3c273_continuum.fits", data_dir)


def _grid(ny: int = 256, nx: int = 256) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:ny, 0:nx]
    return xx.astype(float), yy.astype(float)


def _brute_stats(values: np.ndarray) -> dict[str, float]:
    v = np.sort(values[np.isfinite(values)].astype(np.float64))
    n = v.size
    med = 0.5 * (v[(n - 1) // 2] + v[n // 2])
    dev = np.sort(np.abs(v - med))
    return {"npts": n, "sum": v.sum(), "mean": v.mean(), "sigma": v.std(ddof=1), "rms": math.sqrt((v * v).mean()),
            "min": v[0], "max": v[-1], "median": med, "q1": v[math.ceil(n / 4) - 1], "q3": v[math.ceil(3 * n / 4) - 1],
            "medabsdevmed": 0.5 * (dev[(n - 1) // 2] + dev[n // 2])}


def _assert_stats(data: dict, values: np.ndarray) -> None:
    expected = _brute_stats(values)
    assert data["npts"] == expected["npts"]
    for key in ("median", "q1", "q3", "medabsdevmed", "min", "max"):
        assert data[key] == expected[key], key
    for key in ("sum", "mean", "sigma", "rms"):
        assert data[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    assert data["std"] == data["sigma"]
    assert data["quartile"] == pytest.approx(data["q3"] - data["q1"])


# -- the route and imstat -----------------------------------------------------------------------


def test_route_is_served_at_the_contract_path(js9_client: TestClient) -> None:
    assert js9_client.get(ANALYSIS).status_code == 405
    body = analyse(js9_client, "imstat", C3)
    assert set(body) == {"success", "task", "result", "execution_time_sec"}
    assert body["success"] is True and body["task"] == "imstat"
    assert body["result"]["engine"] == "native" and body["result"]["computed_on"] == "cpu"


def test_token_is_required(settings: Settings) -> None:
    with TestClient(js9_app(settings)) as client:
        response = client.post(ANALYSIS, json={"task": "imstat", "image_path": C3})
    assert response.status_code == 401


def test_imstat_whole_image_and_circle(js9_client: TestClient, c3_file: Path) -> None:
    data = plane(c3_file)
    whole = analyse(js9_client, "imstat", C3)["result"]["DATA"]
    _assert_stats(whole, data)
    assert whole["blc"] == [0, 0] and whole["trc"] == [255, 255]
    assert whole["maxpos"] == [128, 128]
    # JS9 circle at (129, 129) 1-based = pixel (128, 128) 0-based, radius 10: centres with d <= r
    region = {"shape": "circle", "x": 129, "y": 129, "r": 10}
    result = analyse(js9_client, "imstat", C3, region)["result"]
    xx, yy = _grid()
    mask = (xx - 128) ** 2 + (yy - 128) ** 2 <= 100
    _assert_stats(result["DATA"], data[mask])
    assert result["DATA"]["npts"] == 317
    assert result["DATA"]["blc"] == [118, 118] and result["DATA"]["trc"] == [138, 138]
    assert result["region"]["crtf"] == "circle[[128pix, 128pix], 10pix]"
    # flux = sum / beam area in pixels (Jy/beam image with a beam)
    beam_pixels = 41.14145545882698  # CASA imfit's "beampixels" for this image
    assert result["DATA"]["flux"] == pytest.approx(result["DATA"]["sum"] / beam_pixels, rel=1e-6)
    assert result["DATA"]["flux_unit"] == "Jy"


def test_large_circles_follow_casacore_tolerance() -> None:
    """casacore LCEllipsoid widens each row by eps = 10^(int(log10 2r) - 5): 0.01 px at r = 500,
    so 60 pixels with 500 < d <= 500.01 join the 785349 with d <= 500 (counts measured with CASA)."""
    from app.services.js9.casa_geometry import ellipsoid_mask

    ys, xs, mask = ellipsoid_mask(2000.0, 2100.0, 500.0, 500.0, 4096, 4096)
    assert int(mask.sum()) == 785409 and (ys.start, xs.start, ys.stop, xs.stop) == (1600, 1500, 2601, 2501)
    yy, xx = np.mgrid[ys, xs]
    assert int(((xx - 2000.0) ** 2 + (yy - 2100.0) ** 2 <= 250000.0).sum()) == 785349


def test_pixel_origin_zero_is_the_same_region(js9_client: TestClient) -> None:
    one = analyse(js9_client, "imstat", C3, {"shape": "c", "x": 101.5, "y": 90.25, "radius": 7.5})
    zero = analyse(js9_client, "imstat", C3, {"shape": "circle", "x": 100.5, "y": 89.25, "r": 7.5, "pixel_origin": 0})
    assert one["result"]["DATA"] == zero["result"]["DATA"]


@pytest.mark.parametrize(
    ("region", "inside"),
    [
        ({"shape": "box", "x": 101, "y": 98, "width": 11, "height": 7},
         lambda x, y: (np.abs(x - 100) <= 5.5) & (np.abs(y - 97) <= 3.5)),
        ({"shape": "rectangle", "x": 101.25, "y": 98.75, "width": 7.3, "height": 5.1},
         lambda x, y: (x >= 96.6) & (x <= 103.9) & (y >= 95.2) & (y <= 100.3)),
        ({"shape": "r", "x": 101, "y": 98, "width": 12, "height": 6, "angle": 90},
         lambda x, y: (np.abs(x - 100) <= 3) & (np.abs(y - 97) <= 6)),
        ({"shape": "ellipse", "x": 101, "y": 101, "rx": 10, "ry": 4, "angle": 30},
         lambda x, y: ((x - 100) * math.cos(math.radians(30)) + (y - 100) * math.sin(math.radians(30))) ** 2 / 100
         + (-(x - 100) * math.sin(math.radians(30)) + (y - 100) * math.cos(math.radians(30))) ** 2 / 16 <= 1),
        ({"shape": "e", "x": 101, "y": 101, "eradius": {"x": 10, "y": 4}, "angle": 0},
         lambda x, y: (x - 100) ** 2 / 100 + (y - 100) ** 2 / 16 <= 1),
    ],
)
def test_region_shapes(js9_client: TestClient, c3_file: Path, region: dict, inside) -> None:
    xx, yy = _grid()
    mask = inside(xx, yy)
    data = analyse(js9_client, "imstat", C3, region)["result"]["DATA"]
    _assert_stats(data, plane(c3_file)[mask])


def test_polygon_and_rotated_box(js9_client: TestClient, c3_file: Path) -> None:
    from skimage.measure import points_in_poly

    xx, yy = _grid()
    pts = np.array([(90, 90), (110, 92), (105, 115), (88, 108)], dtype=float)
    region = {"shape": "polygon", "pts": [{"x": x + 1, "y": y + 1} for x, y in pts]}
    mask = points_in_poly(np.column_stack([xx.ravel(), yy.ravel()]), pts).reshape(xx.shape)
    data = analyse(js9_client, "imstat", C3, region)["result"]["DATA"]
    _assert_stats(data, plane(c3_file)[mask])
    assert analyse(js9_client, "imstat", C3, {"shape": "poly", "points": [[x + 1, y + 1] for x, y in pts]}
                   )["result"]["DATA"] == data
    t = math.radians(30)
    u = (xx - 100) * math.cos(t) + (yy - 100) * math.sin(t)
    v = -(xx - 100) * math.sin(t) + (yy - 100) * math.cos(t)
    rot = analyse(js9_client, "imstat", C3, {"shape": "box", "x": 101, "y": 101, "width": 10.2, "height": 6.2,
                                             "angle": 30})["result"]
    _assert_stats(rot["DATA"], plane(c3_file)[(np.abs(u) <= 5.1) & (np.abs(v) <= 3.1)])
    assert rot["region"]["crtf"].startswith("poly[[")


@pytest.mark.parametrize(
    ("region", "fragment"),
    [
        ({"shape": "hexagon", "x": 1, "y": 1}, "unsupported shape"),
        ({"shape": "circle", "x": 10, "y": 10}, "missing 'r' or 'radius'"),
        ({"shape": "circle", "x": 10, "y": 10, "r": -2}, "'r' must be positive"),
        ({"shape": "circle", "x": "a", "y": 10, "r": 2}, "'x' must be a number"),
        ({"shape": "box", "x": 10, "y": 10, "width": 3}, "missing 'height'"),
        ({"shape": "polygon", "pts": [{"x": 1, "y": 1}, {"x": 5, "y": 1}]}, "at least 3 vertices"),
        ({"shape": "circle", "x": -500, "y": -500, "r": 3}, "no pixel of the image"),
        ({"shape": "circle", "x": 10, "y": 10, "r": 3, "pixel_origin": 2}, "'pixel_origin' must be 0 or 1"),
        ([1, 2, 3], "must be a JSON object"),
    ],
)
def test_invalid_region_is_400(js9_client: TestClient, region: object, fragment: str) -> None:
    body = analyse(js9_client, "imstat", C3, region, expect=400)  # type: ignore[arg-type]
    assert set(body) == {"detail"}
    assert body["detail"].startswith("Invalid region: ") and fragment in body["detail"], body


def test_chunked_imstat_equals_single_pass(js9_client: TestClient, ngc5921: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    region = {"shape": "circle", "x": 129, "y": 129, "r": 60}
    single = analyse(js9_client, "imstat", ngc5921, region, {"chans": "5~40"})["result"]["DATA"]
    monkeypatch.setattr(native_engine, "PARALLEL_MIN_ELEMENTS", 1)
    chunked = analyse(js9_client, "imstat", ngc5921, region, {"chans": "5~40", "x": 1})["result"]["DATA"]
    for key, value in single.items():
        if isinstance(value, float):
            assert chunked[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert chunked[key] == value, key


def test_imstat_cube_positions_and_flux(js9_client: TestClient, ngc5921: Path) -> None:
    data = analyse(js9_client, "imstat", ngc5921)["result"]["DATA"]
    values = cube(ngc5921)
    _assert_stats(data, values)
    assert data["blc"] == [0, 0, 0, 0] and data["trc"] == [255, 255, 55, 0]
    z, y, x = np.unravel_index(np.nanargmax(values), values.shape)
    assert data["maxpos"] == [x, y, z, 0]
    assert data["flux_unit"] == "Jy.km/s"
    beam_px = math.pi / (4 * math.log(2)) * 52.951 * 47.218 / 225.0
    assert data["flux"] == pytest.approx(data["sum"] / beam_px * 5.152859875656, rel=1e-4)


# -- imfit ----------------------------------------------------------------------------------------


def test_imfit_point_source(js9_client: TestClient) -> None:
    result = analyse(js9_client, "imfit", C3, {"shape": "circle", "x": 129, "y": 129, "r": 20})["result"]
    fit = result["fit"]
    assert set(("amplitude", "center", "major_axis", "minor_axis", "pa", "background")) <= set(fit)
    assert fit["converged"] is True and fit["background"] == 0.0
    assert fit["center"] == pytest.approx([129.001, 129.0006], abs=2e-3)
    assert fit["pixelcoords"] == pytest.approx([fit["center"][0] - 1, fit["center"][1] - 1])
    assert fit["major_axis"] == pytest.approx(3.2073, rel=2e-3) and fit["axis_unit"] == "arcsec"
    assert fit["minor_axis"] == pytest.approx(2.8308, rel=2e-3)
    assert fit["pa"] == pytest.approx(23.0, abs=0.5)
    assert fit["flux"] == pytest.approx(29.91, rel=2e-3) and fit["flux_unit"] == "Jy"
    assert fit["center_world"]["ra_deg"] == pytest.approx(187.27792, abs=1e-4)
    with_bg = analyse(js9_client, "imfit", C3, {"shape": "circle", "x": 129, "y": 129, "r": 20},
                      {"model": "gaussian", "background": True, "return_images": True})["result"]
    assert with_bg["fit"]["background"] != 0.0
    images = with_bg["images"]
    assert images["shape"] == [41, 41] and len(images["model"]) == 41 and len(images["residual"][0]) == 41


def test_imfit_two_components_and_failure(js9_client: TestClient, data_dir: Path, ngc5921: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:80].astype(float)
    img = (5 * np.exp(-0.5 * (((xx - 20.3) / 3) ** 2 + ((yy - 30.2) / 2) ** 2))
           + 3 * np.exp(-0.5 * (((xx - 55.1) / 2.5) ** 2 + ((yy - 25.7) / 2.5) ** 2)) + 0.1)
    path = write_cube(data_dir / "two.fits", img[None].astype(np.float32))
    fit = analyse(js9_client, "imfit", path, parameters={"n_components": 2, "background": True})["result"]
    centres = sorted(c["center"] for c in fit["components"])
    assert centres[0] == pytest.approx([21.3, 31.2], abs=1e-3)
    assert centres[1] == pytest.approx([56.1, 26.7], abs=1e-3)
    assert fit["fit"]["background"] == pytest.approx(0.1, abs=1e-6)
    # a region of blank pixels only: the fit cannot run -> HTTP 500 with the reference's body
    failed = analyse(js9_client, "imfit", ngc5921, {"shape": "circle", "x": 6, "y": 6, "r": 3}, expect=500)
    assert set(failed) == {"success", "task", "error", "execution_time_sec"}
    assert failed["success"] is False and failed["task"] == "imfit" and "imfit failed" in failed["error"]


# -- imview ---------------------------------------------------------------------------------------


def test_imview_contours_against_skimage(js9_client: TestClient, c3_file: Path) -> None:
    from scipy.ndimage import gaussian_filter
    from skimage.measure import find_contours

    result = analyse(js9_client, "imview", C3, parameters={"n_levels": 6, "smoothing_sigma": 2.0,
                                                            "level_scale": "linear"})["result"]
    smoothed = gaussian_filter(plane(c3_file).astype(np.float64), 2.0)
    levels = np.linspace(smoothed.min(), smoothed.max(), 8)[1:-1]
    assert result["contour_levels"] == pytest.approx(levels.tolist(), rel=1e-12)
    assert result["image_shape"] == [256, 256] and result["pixel_origin"] == 1
    assert result["data_range"] == pytest.approx({"min": smoothed.min(), "max": smoothed.max()})
    for level, entry in zip(levels, result["contour_paths"], strict=True):
        expected = find_contours(smoothed, level)
        assert len(entry["paths"]) == len(expected)
        for path, ref in zip(entry["paths"], expected, strict=True):
            np.testing.assert_allclose(path["x"], ref[:, 1] + 1, atol=1e-9)
            np.testing.assert_allclose(path["y"], ref[:, 0] + 1, atol=1e-9)
            assert path["closed"] == bool(np.array_equal(ref[0], ref[-1]))
    explicit = analyse(js9_client, "imview", C3, parameters={"levels": [1.0, 0.1], "smoothing_sigma": 0})["result"]
    assert explicit["contour_levels"] == [0.1, 1.0]
    ref = find_contours(plane(c3_file).astype(np.float64), 0.1)
    assert len(explicit["contour_paths"][0]["paths"]) == len(ref)


def test_imview_region_limits_contours(js9_client: TestClient) -> None:
    result = analyse(js9_client, "imview", C3, {"shape": "box", "x": 129, "y": 129, "width": 30, "height": 30},
                     {"n_levels": 4})["result"]
    xs = [x for level in result["contour_paths"] for p in level["paths"] for x in p["x"]]
    assert xs and min(xs) >= 114 - 1e-9 and max(xs) <= 144 + 1e-9


# -- specflux -------------------------------------------------------------------------------------


def test_specflux_cube_and_image(js9_client: TestClient, ngc5921: Path, c3_file: Path) -> None:
    region = {"shape": "circle", "x": 129, "y": 129, "r": 20}
    result = analyse(js9_client, "specflux", ngc5921, region)["result"]
    values = cube(ngc5921)
    xx, yy = _grid()
    mask = (xx - 128) ** 2 + (yy - 128) ** 2 <= 400
    sel = values[:, mask]
    sums = np.where(np.isfinite(sel), sel, 0).sum(axis=1, dtype=np.float64)
    spectrum = result["spectrum"]
    np.testing.assert_allclose(spectrum["sum"], sums, rtol=1e-12, atol=1e-15)
    assert spectrum["npix"] == np.isfinite(sel).sum(axis=1).tolist()
    beam_px = math.pi / (4 * math.log(2)) * 52.951 * 47.218 / 225.0
    np.testing.assert_allclose(spectrum["flux_density"], sums / beam_px, rtol=1e-4)
    assert spectrum["coordinate_unit"] == "km/s" and len(spectrum["coordinate"]) == 56
    assert result["total_flux_unit"] == "Jy.km/s"
    total = np.sum(np.asarray(spectrum["flux_density"])) * 5.152859875656
    assert result["total_flux"] == pytest.approx(total, rel=1e-9)
    assert result["flux"]["DATA"]["flux"] == result["total_flux"]
    image = analyse(js9_client, "specflux", C3, region)["result"]
    assert image["note"] == "Spectral flux extraction via imstat"
    assert set(image["flux"]["DATA"]) >= {"mean", "sum"}
    assert image["flux"]["DATA"]["sum"] == pytest.approx(float(plane(c3_file)[mask].sum(dtype=np.float64)), rel=1e-12)


# -- imval ----------------------------------------------------------------------------------------


def test_imval_box_point_and_stokes(js9_client: TestClient, c3_file: Path, ngc5921: Path) -> None:
    data = plane(c3_file)
    result = analyse(js9_client, "imval", C3, parameters={"box": "120,121,123,125"})["result"]
    assert result["shape"] == [5, 4] and result["blc"] == [120, 121] and result["trc"] == [123, 125]
    assert result["values"] == data[121:126, 120:124].astype(np.float64).ravel().tolist()
    assert all(result["mask"])
    point = analyse(js9_client, "imval", C3, {"shape": "point", "x": 129, "y": 130})["result"]
    assert point["value"] == float(data[129, 128]) and point["shape"] == [1, 1]
    four = analyse(js9_client, "imval", C3_4D, parameters={"box": "120,121,123,125", "stokes": "I"})["result"]
    assert four["values"] == result["values"] and four["blc"] == [120, 121, 0, 0] and four["stokes"] == "I"
    bad = analyse(js9_client, "imval", C3_4D, parameters={"stokes": "Q"}, expect=400)
    assert "'Q' is not in the image" in bad["detail"]
    blank = analyse(js9_client, "imval", ngc5921, parameters={"box": "0,0,1,1", "chans": "3~4"})["result"]
    assert blank["shape"] == [2, 2, 2] and blank["values"] == [None] * 8 and blank["mask"] == [False] * 8
    ref = analyse(js9_client, "imval", C3)["result"]  # no box, no region: the reference pixel (CRPIX 129)
    assert ref["blc"] == [128, 128] and ref["value"] == float(data[128, 128])


# -- errors ---------------------------------------------------------------------------------------


def test_error_bodies(js9_client: TestClient, data_dir: Path) -> None:
    assert analyse(js9_client, "invalid_task", C3, expect=400) == {
        "detail": f"Invalid task 'invalid_task'. Valid tasks: {VALID}"}
    assert analyse(js9_client, "imstat", "/path/to/image.fits", expect=404) == {
        "detail": "Image file not found: /path/to/image.fits"}
    (data_dir / "file.txt").write_text("not a FITS file\n")
    text = str(data_dir / "file.txt")
    assert analyse(js9_client, "imstat", text, expect=400) == {"detail": f"File is not a FITS image: {text}"}
    (data_dir / "table.fits").write_bytes(b"")
    assert analyse(js9_client, "imstat", data_dir / "table.fits", expect=400)["detail"].startswith(
        "File is not a FITS image")
    bad_param = analyse(js9_client, "imview", C3, parameters={"n_levels": 0}, expect=400)
    assert bad_param["detail"].startswith("Invalid parameter 'n_levels'")
    assert analyse(js9_client, "imstat", C3, parameters={"chans": "3~1"}, expect=400)["detail"].startswith(
        "Invalid parameter 'chans'")
    assert js9_client.post(ANALYSIS, json={"task": "imstat"}).status_code == 422
    assert js9_client.post(ANALYSIS, json={"task": "imstat"}).json() == {
        "detail": "Invalid request: field 'image_path' is required"}
    assert js9_client.post(ANALYSIS, content=b"{not json", headers={"Content-Type": "application/json"}
                           ).status_code == 422
    assert js9_client.post(ANALYSIS, json={"task": "imstat", "image_path": C3, "parameters": [1]}
                           ).status_code == 400


def test_paths_are_confined_to_the_data_roots(js9_client: TestClient, data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.fits"
    write_cube(outside, np.ones((1, 4, 4), dtype=np.float32))
    (data_dir / "link.fits").symlink_to(outside)
    for raw in ("../../../../etc/passwd", "/etc/passwd", str(outside), str(data_dir / "link.fits"),
                str(data_dir / ".." / "outside.fits"), ""):
        body = analyse(js9_client, "imstat", raw, expect=404)
        assert body == {"detail": f"Image file not found: {raw}"}
    response = js9_client.get("/api/visualization/js9/file", params={"path": "/etc/passwd"})
    assert response.status_code == 404


def test_casa_engine_without_casatasks_is_a_clear_400(js9_client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(casa_engine, "available", lambda: False)
    body = analyse(js9_client, "imstat", C3, parameters={"engine": "casa"}, expect=400)
    assert "casatasks" in body["detail"] and "native" in body["detail"]
    assert analyse(js9_client, "imstat", C3, parameters={"engine": "gpu"}, expect=400)["detail"].startswith(
        "Invalid parameter 'engine'")


# -- cache ----------------------------------------------------------------------------------------


def test_cache_hit_is_identical_and_fast(js9_client: TestClient) -> None:
    body = {"task": "imfit", "image_path": C3, "region": {"shape": "circle", "x": 129, "y": 129, "r": 15}}
    first = js9_client.post(ANALYSIS, json=body)
    second = js9_client.post(ANALYSIS, json=body)
    assert first.headers["X-JS9-Cache"] == "miss" and second.headers["X-JS9-Cache"] == "hit"
    assert first.json()["result"] == second.json()["result"]
    # the reference: a cached answer's execution_time_sec is < 0.01 s (the time to find it)
    assert second.json()["execution_time_sec"] < 0.01
    assert second.json()["execution_time_sec"] <= first.json()["execution_time_sec"]
    # another region, another parameter or another task is another entry
    other = dict(body, region={"shape": "circle", "x": 129, "y": 129, "r": 16})
    assert js9_client.post(ANALYSIS, json=other).headers["X-JS9-Cache"] == "miss"
    assert js9_client.post(ANALYSIS, json=dict(body, parameters={"background": True})).headers["X-JS9-Cache"] == "miss"


def test_changed_file_is_recomputed(js9_client: TestClient, data_dir: Path) -> None:
    path = write_cube(data_dir / "edit.fits", np.full((1, 8, 8), 2.0, dtype=np.float32))
    first = analyse(js9_client, "imstat", path)["result"]["DATA"]
    assert first["mean"] == 2.0
    mtime = path.stat().st_mtime_ns
    write_cube(path, np.full((1, 8, 8), 3.0, dtype=np.float32))
    os.utime(path, ns=(mtime + 1_000_000_000, mtime + 1_000_000_000))
    response = js9_client.post(ANALYSIS, json={"task": "imstat", "image_path": str(path)})
    assert response.headers["X-JS9-Cache"] == "miss"
    assert response.json()["result"]["DATA"]["mean"] == 3.0


def test_js9_answers_share_the_product_cache_with_sha256_keys(tmp_path: Path) -> None:
    """Issue 10: JS9 has no cache of its own; its plans key the one product cache (SHA-256, canonical JSON)."""
    from app.operations import registry
    from app.operations.base import Call
    from app.operations.defs._js9 import Js9Call
    from app.operations.executor import cache_key

    path = tmp_path / "a.fits"
    path.write_bytes(b"SIMPLE")
    imstat, imfit = registry.get("js9_imstat"), registry.get("js9_imfit")

    def key(op, region, params):  # noqa: ANN001, ANN202
        call = Js9Call("t", "a.fits", path, None, region, params, "native", None)
        return cache_key(op, op().plan(Call(runtime=_FakeRuntime(), session_id=None), call))

    k = key(imstat, {"shape": "c", "x": 1}, {"b": 1, "a": 2})
    assert len(k) == 64 and int(k, 16) >= 0
    assert k == key(imstat, {"x": 1, "shape": "c"}, {"a": 2, "b": 1})
    assert k != key(imfit, {"shape": "c", "x": 1}, {"b": 1, "a": 2})
    mtime = path.stat().st_mtime_ns
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert k != key(imstat, {"shape": "c", "x": 1}, {"b": 1, "a": 2})  # an edited file is a new key


class _FakeRuntime:
    js9_images = None


# -- viewer ---------------------------------------------------------------------------------------


def test_viewer_routes(js9_client: TestClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from app.routers import js9

    redirect = js9_client.get("/js9", follow_redirects=False)
    assert redirect.status_code == 307 and redirect.headers["location"] == "/js9/"
    assert js9_client.get("/js9/js9-casa.js").status_code == 200
    assert js9_client.get("/js9/../main.py").status_code == 404
    assert js9_client.get("/js9/vendor/.js9-version").status_code == 404
    monkeypatch.setattr(js9, "VENDOR_DIR", tmp_path / "no-js9")
    missing = js9_client.get("/js9/")
    assert missing.status_code == 503 and "scripts/install_js9.sh" in missing.text
    assert js9_client.get("/js9/vendor/js9.min.js").status_code == 404
    status = js9_client.get("/api/visualization/js9/status").json()
    assert status["js9_installed"] is False and status["tasks"] == TASKS


def test_viewer_page_when_installed(js9_client: TestClient) -> None:
    from app.routers import js9

    if not js9.js9_installed():
        pytest.skip("JS9 is not installed (run scripts/install_js9.sh)")
    page = js9_client.get("/js9/")
    assert page.status_code == 200 and "vendor/js9.min.js" in page.text
    assert js9_client.get("/js9/vendor/js9.min.js").status_code == 200
    wasm = js9_client.get("/js9/vendor/astroemw.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"


def test_file_route_serves_the_fits_file(js9_client: TestClient, settings: Settings) -> None:
    response = js9_client.get("/api/visualization/js9/file", params={"path": C3})
    assert response.status_code == 200
    assert response.content[:2] == b"\x1f\x8b"
    with TestClient(js9_app(settings)) as anonymous:
        assert anonymous.get("/api/visualization/js9/file", params={"path": C3}).status_code == 401


def test_open_image_cache(data_dir: Path) -> None:
    from app.services.js9.images import ImageCache, open_view

    path = write_cube(data_dir / "cached.fits", np.ones((1, 6, 6), dtype=np.float32))
    cache = ImageCache(capacity=1)
    first = open_view(path, cache=cache)
    assert open_view(path, cache=cache).image is first.image and not first.owned
    first.close()  # a cached image stays open for the next request
    assert open_view(path, cache=cache).source.read().sum() == 36.0
    mtime = path.stat().st_mtime_ns
    write_cube(path, np.full((1, 6, 6), 2.0, dtype=np.float32))
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert open_view(path, cache=cache).source.read().sum() == 72.0 and len(cache) == 1

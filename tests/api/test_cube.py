"""Cube routes: preview, slice, sub-volume, noise, PV — against astropy and hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS
from fastapi.testclient import TestClient

from tests.api.conftest import decode, open_dataset, write_cube


@pytest.fixture
def ngc(client: TestClient, ngc5921: Path) -> tuple[dict, dict, np.ndarray]:
    body = open_dataset(client, ngc5921)
    headers = {"X-Visivo-Session": body["session_id"]}
    return body, headers, fits.getdata(ngc5921)[0].astype(np.float32)


def test_preview_is_strided(client: TestClient, ngc) -> None:
    body, headers, cube = ngc
    res = client.post("/v1/cube/preview", json={"dataset_id": body["dataset_id"], "downsample": 3},
                      headers=headers).json()
    assert (res["depth"], res["height"], res["width"]) == (math.ceil(56 / 3), math.ceil(256 / 3), math.ceil(256 / 3))
    data = decode(res, shape=(res["depth"], res["height"], res["width"]))
    np.testing.assert_array_equal(data, cube[::3, ::3, ::3])
    assert res["range_min"] == pytest.approx(float(np.nanmin(cube[::3, ::3, ::3])))
    assert res["range_max"] == pytest.approx(float(np.nanmax(cube[::3, ::3, ::3])))


@pytest.mark.parametrize("compression", ["none", "qt-zlib"])
def test_slices(client: TestClient, ngc, compression: str) -> None:
    body, headers, cube = ngc
    for axis, index, expected in (("z", 30, cube[30]), ("y", 128, cube[:, 128, :]), ("x", 100, cube[:, :, 100])):
        res = client.post("/v1/cube/slice", json={"dataset_id": body["dataset_id"], "axis": axis, "index": index,
                                                  "compression": compression}, headers=headers).json()
        assert res["valid"] and res["compression"] == compression
        np.testing.assert_array_equal(decode(res, shape=(res["height"], res["width"])), expected)
    bad = client.post("/v1/cube/slice", json={"dataset_id": body["dataset_id"], "index": 56}, headers=headers).json()
    assert bad["valid"] is False and "out of range" in bad["error"]
    bad_axis = client.post("/v1/cube/slice", json={"dataset_id": body["dataset_id"], "axis": "w"},
                           headers=headers).json()
    assert bad_axis["valid"] is False


def test_subvolume_inclusive_clamped_synonyms(client: TestClient, ngc) -> None:
    body, headers, cube = ngc
    ds = body["dataset_id"]
    res = client.post("/v1/cube/subvolume", json={"dataset_id": ds, "x0": 10, "x1": 20, "y0": 100, "y1": 130,
                                                  "z0": 5, "z1": 10}, headers=headers).json()
    assert (res["width"], res["height"], res["depth"]) == (11, 31, 6)
    np.testing.assert_array_equal(decode(res, shape=(6, 31, 11)), cube[5:11, 100:131, 10:21])
    alt = client.post("/v1/cube/subvolume", json={"dataset_id": ds, "x0": 10, "x1": 20, "y0": 100, "y1": 130,
                                                  "channel_start": 5, "channel_end": 10}, headers=headers).json()
    assert alt["data_base64"] == res["data_base64"]
    clamped = client.post("/v1/cube/subvolume", json={"dataset_id": ds, "x0": -5, "x1": 9999, "y0": 250, "y1": 300,
                                                      "z0": 50, "z1": 99}, headers=headers).json()
    assert (clamped["width"], clamped["height"], clamped["depth"]) == (256, 6, 6)
    inverted = client.post("/v1/cube/subvolume", json={"dataset_id": ds, "x0": 20, "x1": 10}, headers=headers).json()
    assert inverted["valid"] is False and "Invalid x range" in inverted["error"]


def test_cube_routes_need_own_session(client: TestClient, ngc) -> None:
    body, _, _ = ngc
    other = open_dataset(client, "3c273_continuum.fits.gz")["session_id"]
    for route in ("preview", "slice", "subvolume", "noise", "pv"):
        res = client.post(f"/v1/cube/{route}", json={"dataset_id": body["dataset_id"], "vertices": [[0, 0], [5, 5]]},
                          headers={"X-Visivo-Session": other})
        assert res.status_code == 404, route


def test_noise_matches_astropy(client: TestClient, ngc) -> None:
    body, headers, cube = ngc
    req = {"dataset_id": body["dataset_id"], "x0": 60, "x1": 200, "y0": 70, "y1": 190, "channel_start": 0,
           "channel_end": 60}
    res = client.post("/v1/cube/noise", json=req, headers=headers).json()
    assert res["valid"] and res["channel_end"] == 55 and res["num_channels"] == 56
    assert res["region"] == {"x0": 60, "x1": 200, "y0": 70, "y1": 190}
    region = cube[:, 70:191, 60:201]
    for z in (0, 20, 55):
        plane = region[z][np.isfinite(region[z])]
        mad = np.median(np.abs(plane - np.median(plane)))
        assert res["mad"][z] == pytest.approx(mad, rel=1e-6)
        assert res["sigma"][z] == pytest.approx(mad_std(plane), rel=1e-4)
    blank = client.post("/v1/cube/noise", json={"dataset_id": body["dataset_id"], "x0": 0, "x1": 5, "y0": 0,
                                                "y1": 5}, headers=headers).json()
    assert blank["valid"] and blank["mad"][0] is None and blank["sigma"][0] is None
    assert blank["blank_fraction"] == 1.0
    bad = client.post("/v1/cube/noise", json={**req, "channel_start": 30, "channel_end": 10}, headers=headers).json()
    assert bad["valid"] is False


@pytest.fixture
def small(client: TestClient, data_dir: Path) -> tuple[dict, dict, np.ndarray]:
    rng = np.random.default_rng(3)
    cube = rng.normal(0, 1, (7, 12, 16)).astype(np.float32)
    cube[2, 4, 5] = np.nan
    path = write_cube(data_dir / "small.fits", cube)
    body = open_dataset(client, path)
    return body, {"X-Visivo-Session": body["session_id"]}, cube


def test_pv_horizontal_hand_computed(client: TestClient, small) -> None:
    body, headers, cube = small
    res = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "vertices": [[2, 4], [9, 4]],
                                           "width_pixels": 1}, headers=headers).json()
    assert res["valid"] and res["num_samples"] == 8 and res["depth"] == 7 and res["total_length"] == 8 - 1
    data = decode(res, shape=(7, 8))
    np.testing.assert_array_equal(data, cube[:, 4, 2:10])
    np.testing.assert_allclose(decode(res, "positions_base64"), np.arange(8.0))
    scale = 0.004 * 3600
    assert res["pixel_scale_arcsec_per_pixel"] == pytest.approx(scale, rel=1e-3)
    np.testing.assert_allclose(decode(res, "positions_arcsec_base64"), np.arange(8.0) * scale, rtol=1e-3)
    assert res["valid_samples"] == int(np.isfinite(data).sum())
    assert res["bunit"] == "Jy/beam" and res["beam_major"] == pytest.approx(36.0)
    wide = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "vertices": [[2, 4], [9, 4]],
                                            "width_pixels": 3}, headers=headers).json()
    expected = np.nanmean(cube[:, 3:6, 2:10].astype(np.float64), axis=1)
    np.testing.assert_allclose(decode(wide, shape=(7, 8)), expected, rtol=1e-6)


def test_pv_world_points_equal_pixel_path(client: TestClient, small, data_dir: Path) -> None:
    body, headers, _ = small
    wcs = WCS(fits.getheader(data_dir / "small.fits")).celestial
    ra, dec = wcs.pixel_to_world_values([1.0, 10.0, 12.0], [2.0, 9.0, 3.0])
    points = [[float(a), float(d)] for a, d in zip(ra, dec, strict=True)]
    world = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "width_pixels": 1,
                                             "points_ra_dec": points}, headers=headers).json()
    pixel = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "width_pixels": 1,
                                             "vertices": [[1, 2], [10, 9], [12, 3]]}, headers=headers).json()
    assert world["num_samples"] == pixel["num_samples"]
    np.testing.assert_allclose(decode(world), decode(pixel), rtol=1e-6, equal_nan=True)


def test_pv_errors(client: TestClient, small) -> None:
    body, headers, _ = small
    for vertices, message in (([[3, 3], [3, 3]], "2 distinct"), ([[3, 3]], ""), (None, "vertices")):
        res = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "vertices": vertices},
                          headers=headers).json()
        assert res["valid"] is False and message in res["error"]
    outside = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "vertices": [[100, 100], [200, 100]]},
                          headers=headers).json()
    assert outside["valid"] is False

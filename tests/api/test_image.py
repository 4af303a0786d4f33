"""Image routes: PNG decodes to the right size with NaN transparent; float32 payload equals the
nearest-neighbour decimation of the reference; cube channels; options and errors."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient
from PIL import Image

from tests.api.conftest import decode, open_dataset, write_cube

NY, NX = 200, 300


@pytest.fixture
def image_path(data_dir: Path) -> Path:
    yy, xx = np.mgrid[:NY, :NX]
    data = (np.exp(-((xx - 150) ** 2 + (yy - 90) ** 2) / 800.0) + 0.001 * xx).astype(np.float32)
    data[10:14, 20:26] = np.nan
    data[150:170, 200:260] = np.nan
    header = fits.Header()
    header["CTYPE1"], header["CTYPE2"] = "RA---SIN", "DEC--SIN"
    header["CDELT1"], header["CDELT2"] = -1e-3, 1e-3
    header["CRVAL1"], header["CRVAL2"] = 10.0, 20.0
    header["CRPIX1"], header["CRPIX2"] = NX / 2, NY / 2
    header["BUNIT"] = "Jy/beam"
    path = data_dir / "img.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def _png(body: dict) -> np.ndarray:
    picture = Image.open(io.BytesIO(base64.b64decode(body["png_base64"])))
    assert picture.format == "PNG" and picture.mode == "RGBA"
    return np.asarray(picture)


def _indices(n: int, m: int) -> np.ndarray:
    return np.floor((np.arange(m) + 0.5) * n / m).astype(int)


def test_png_preview_size_and_transparent_nan(client: TestClient, image_path: Path) -> None:
    body = open_dataset(client, image_path)
    headers = {"X-Visivo-Session": body["session_id"]}
    res = client.post("/v1/image/preview", json={"dataset_id": body["dataset_id"], "max_longest_side": 100},
                      headers=headers).json()
    assert res["valid"], res
    assert (res["width"], res["height"]) == (100, 67)
    assert (res["full_width"], res["full_height"], res["is_preview"]) == (NX, NY, True)
    assert res["preview_scale_factor"] == pytest.approx(3.0) and res["bunit"] == "Jy/beam"
    rgba = _png(res)
    assert rgba.shape == (67, 100, 4)
    ref = fits.getdata(image_path)[_indices(NY, 67)][:, _indices(NX, 100)]
    alpha = rgba[::-1, :, 3]  # origin "lower": the first PNG row is the top (last FITS row)
    np.testing.assert_array_equal(alpha == 0, np.isnan(ref))
    assert np.isnan(ref).any()
    assert res["range_min"] == pytest.approx(float(np.nanmin(ref)))
    assert res["range_max"] == pytest.approx(float(np.nanmax(ref)))
    upper = client.post("/v1/image/preview", json={"dataset_id": body["dataset_id"], "max_longest_side": 100,
                                                   "origin": "upper"}, headers=headers).json()
    np.testing.assert_array_equal(_png(upper), rgba[::-1])


def test_float32_preview_and_full(client: TestClient, image_path: Path) -> None:
    body = open_dataset(client, image_path)
    headers = {"X-Visivo-Session": body["session_id"]}
    ref = fits.getdata(image_path)
    res = client.post("/v1/image/preview", json={"dataset_id": body["dataset_id"], "max_longest_side": 64,
                                                 "format": "float32", "compression": "qt-zlib"},
                      headers=headers).json()
    assert res["scalar_type"] == "float32" and res["compression"] == "qt-zlib"
    w, h = res["width"], res["height"]
    assert max(w, h) <= 64 and (w, h) == (64, 43)
    np.testing.assert_array_equal(decode(res, shape=(h, w)), ref[_indices(NY, h)][:, _indices(NX, w)])
    full = client.post("/v1/image/full", json={"dataset_id": body["dataset_id"], "format": "float32"},
                       headers=headers).json()
    assert (full["width"], full["height"], full["is_preview"]) == (NX, NY, False)
    np.testing.assert_array_equal(decode(full, shape=(NY, NX)), ref)
    png = client.post("/v1/image/full", json={"dataset_id": body["dataset_id"]}, headers=headers).json()
    assert _png(png).shape == (NY, NX, 4)
    small = client.post("/v1/image/preview", json={"dataset_id": body["dataset_id"], "max_longest_side": 4096},
                        headers=headers).json()
    assert small["is_preview"] is False and (small["width"], small["height"]) == (NX, NY)
    assert small["preview_scale_factor"] == 1.0


def test_cube_channel(client: TestClient, data_dir: Path) -> None:
    cube = np.random.default_rng(2).normal(size=(5, 40, 30)).astype(np.float32)
    cube[3, 5, 7] = np.nan
    body = open_dataset(client, write_cube(data_dir / "c.fits", cube))
    headers = {"X-Visivo-Session": body["session_id"]}
    res = client.post("/v1/image/full", json={"dataset_id": body["dataset_id"], "channel": 3,
                                              "format": "float32"}, headers=headers).json()
    assert res["channel"] == 3 and res["depth"] == 5
    np.testing.assert_array_equal(decode(res, shape=(40, 30)), cube[3])
    png = client.post("/v1/image/full", json={"dataset_id": body["dataset_id"], "channel": 3, "origin": "upper"},
                      headers=headers).json()
    rgba = _png(png)
    assert rgba[5, 7, 3] == 0 and (rgba[..., 3] == 255).sum() == 40 * 30 - 1
    bad = client.post("/v1/image/full", json={"dataset_id": body["dataset_id"], "channel": 5},
                      headers=headers).json()
    assert bad["valid"] is False and "out of range" in bad["error"]


@pytest.mark.parametrize("stretch", ["linear", "sqrt", "log", "asinh", "sinh", "squared", "histeq"])
def test_stretches_and_colormaps(client: TestClient, image_path: Path, stretch: str) -> None:
    body = open_dataset(client, image_path)
    headers = {"X-Visivo-Session": body["session_id"]}
    for cmap in ("gray", "viridis", "inferno_r", "hot", "cubehelix"):
        res = client.post("/v1/image/preview", json={"dataset_id": body["dataset_id"], "max_longest_side": 50,
                                                     "stretch": stretch, "colormap": cmap, "percentile": 99.0},
                          headers=headers).json()
        assert res["valid"], res
        rgba = _png(res)
        assert rgba.shape == (33, 50, 4) and rgba[..., :3].std() > 0


def test_display_limits_and_errors(client: TestClient, image_path: Path) -> None:
    body = open_dataset(client, image_path)
    headers = {"X-Visivo-Session": body["session_id"]}
    ds = body["dataset_id"]
    res = client.post("/v1/image/full", json={"dataset_id": ds, "stretch": "linear", "vmin": 0.0, "vmax": 1.0,
                                              "origin": "upper"}, headers=headers).json()
    ref = fits.getdata(image_path)
    rgba = _png(res)
    expected = np.round(np.clip(np.nan_to_num(ref), 0, 1) * 255).astype(np.uint8)
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(rgba[..., 0][finite], expected[finite])
    for bad in ({"stretch": "wavy"}, {"colormap": "rainbowish"}, {"format": "jpeg"}, {"percentile": 0},
                {"origin": "left"}):
        out = client.post("/v1/image/preview", json={"dataset_id": ds, **bad}, headers=headers).json()
        assert out["valid"] is False, bad
    invalid = client.post("/v1/image/preview", json={"dataset_id": ds, "max_longest_side": 0}, headers=headers)
    assert invalid.status_code == 422
    cat = client.post("/v1/catalogue/open", json={"path": "catalogue_sky.csv"}, headers=headers).json()
    wrong = client.post("/v1/image/preview", json={"dataset_id": cat["dataset_id"]}, headers=headers).json()
    assert wrong["valid"] is False and "not an image or cube" in wrong["error"]


def test_demo_continuum_image(client: TestClient) -> None:
    body = open_dataset(client, "3c273_continuum_4d.fits.gz")
    res = client.post("/v1/image/preview", json={"dataset_id": body["dataset_id"], "max_longest_side": 128},
                      headers={"X-Visivo-Session": body["session_id"]}).json()
    assert res["valid"] and max(res["width"], res["height"]) == 128
    assert _png(res).shape == (res["height"], res["width"], 4)

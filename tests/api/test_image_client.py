"""Issue 11, finding 3: image routes without ``format`` answer the PNG and the float32 plane the
desktop client reads; the float32 payload respects the response-size limit."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import TOKEN, decode, open_dataset

NY, NX = 120, 160


@pytest.fixture
def image_path(data_dir: Path) -> Path:
    rng = np.random.default_rng(11)
    data = rng.normal(size=(NY, NX)).astype(np.float32)
    data[0, :] = 100.0 + np.arange(NX)  # FITS row y = 0 is recognisable
    data[5:8, 9:12] = np.nan
    path = data_dir / "client_img.fits"
    fits.PrimaryHDU(data).writeto(path)
    return path


def _post(client: TestClient, route: str, opened: dict, **extra) -> dict:
    return client.post(route, json={"dataset_id": opened["dataset_id"], **extra},
                       headers={"X-Visivo-Session": opened["session_id"]}).json()


def test_full_without_format_has_png_and_float32(client: TestClient, image_path: Path) -> None:
    opened = open_dataset(client, image_path)
    body = _post(client, "/v1/image/full", opened)  # exactly what BackendClient::requestImage sends
    assert body["valid"] is True, body
    assert body["scalar_type"] == "float32" and body["compression"] == "none"
    assert body["format"] == "png+float32"
    plane = decode(body, shape=(body["height"], body["width"]))
    reference = fits.getdata(image_path)
    np.testing.assert_array_equal(plane, reference)  # NaN positions equal too; row 0 = FITS y 0
    assert (body["width"], body["height"], body["full_width"], body["full_height"]) == (NX, NY, NX, NY)
    assert body["is_preview"] is False and body["preview_scale_factor"] == 1.0
    assert body["range_min"] == pytest.approx(float(np.nanmin(reference)))
    assert body["range_max"] == pytest.approx(float(np.nanmax(reference)))
    picture = Image.open(io.BytesIO(base64.b64decode(body["png_base64"])))
    assert picture.format == "PNG" and picture.size == (NX, NY)
    alpha = np.asarray(picture)[::-1, :, 3]  # origin lower
    np.testing.assert_array_equal(alpha == 0, np.isnan(reference))


def test_preview_without_format_has_decimated_float32(client: TestClient, image_path: Path) -> None:
    opened = open_dataset(client, image_path)
    body = _post(client, "/v1/image/preview", opened, max_longest_side=40)
    assert body["valid"] is True, body
    assert (body["width"], body["height"]) == (40, 30)
    assert body["is_preview"] is True and body["preview_scale_factor"] == pytest.approx(4.0)
    assert (body["full_width"], body["full_height"]) == (NX, NY)
    plane = decode(body, shape=(30, 40))
    ys = np.floor((np.arange(30) + 0.5) * NY / 30).astype(int)
    xs = np.floor((np.arange(40) + 0.5) * NX / 40).astype(int)
    np.testing.assert_array_equal(plane, fits.getdata(image_path)[ys][:, xs])
    assert Image.open(io.BytesIO(base64.b64decode(body["png_base64"]))).size == (40, 30)


def test_explicit_formats_answer_one_payload(client: TestClient, image_path: Path) -> None:
    opened = open_dataset(client, image_path)
    png = _post(client, "/v1/image/full", opened, format="png")
    assert "png_base64" in png and "data_base64" not in png and png["format"] == "png"
    raw = _post(client, "/v1/image/full", opened, format="float32")
    assert "data_base64" in raw and "png_base64" not in raw and raw["format"] == "float32"


def test_float32_payload_over_the_response_limit(tmp_path: Path, data_dir: Path) -> None:
    # 700 x 600 float32: base64 text 4·ceil(4·420000/3) = 2 240 000 bytes = 2.1 MiB > 1 MiB
    fits.PrimaryHDU(np.ones((600, 700), dtype=np.float32)).writeto(data_dir / "big.fits")
    settings = Settings(token=TOKEN, token_file=tmp_path / "tok", output_dir=tmp_path / "out2",
                        data_roots=str(data_dir), backend="cpu", workers=1, max_response_mb=1)
    with TestClient(create_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        opened = open_dataset(client, data_dir / "big.fits")
        for fmt in (None, "float32"):
            extra = {} if fmt is None else {"format": fmt}
            body = _post(client, "/v1/image/full", opened, **extra)
            assert body["valid"] is False
            assert "2.1 MiB" in body["error"] and "limit of 1.0 MiB" in body["error"]
        assert _post(client, "/v1/image/full", opened, format="png")["valid"] is True
        small = _post(client, "/v1/image/preview", opened, max_longest_side=256)
        assert small["valid"] is True and small["width"] == 256
        assert decode(small).size == 256 * 219

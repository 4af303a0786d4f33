"""/v1/datasets/open on the real VLA data and on broken files."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.settings import DEMO_DATA_ROOT
from tests.api.conftest import open_dataset


def test_open_ngc5921_4d(client: TestClient, ngc5921: Path) -> None:
    body = open_dataset(client, ngc5921)
    assert body["dataset_id"].startswith("ds_") and len(body["dataset_id"]) == 15
    assert body["session_id"]
    assert body["kind"] == "cube" and body["active_axes"] == 3
    assert (body["width"], body["height"], body["depth"]) == (256, 256, 56)
    assert body["bunit"] == "Jy/beam"
    assert body["beam_major"] == pytest.approx(52.951, abs=1e-3)
    assert body["beam_minor"] == pytest.approx(47.218, abs=1e-3)
    assert body["beam_pa"] == pytest.approx(7.6289, abs=1e-4)
    assert body["beam"]["unit"] == "arcsec"
    assert body["rest_freq_hz"] == pytest.approx(1420405752.0)
    assert body["spectral_axis_type"] == "VRAD" and body["spectral_axis_unit"] == "m/s"
    assert body["wcs_status"] == "ok"
    assert body["ctype"] == ["RA---SIN", "DEC--SIN", "VRAD"]
    assert body["cunit"] == ["deg", "deg", "m/s"]
    assert body["crval"] == pytest.approx([230.5, 5.066666666667, 1613144.936336])
    assert body["crpix"] == pytest.approx([129.0, 129.0, 1.0])
    assert body["cdelt"] == pytest.approx([-0.004166666666667, 0.004166666666667, -5152.859875656])
    assert body["origin"][2] == pytest.approx(1613144.936336)
    assert body["origin"][0] == pytest.approx(230.5 + 0.004166666666667 * 128)
    assert "STOKES" in body["degenerate_axes_summary"]


def test_open_gz_3d_2d_and_4d_image(client: TestClient, data_dir: Path) -> None:
    cube = open_dataset(client, "ngc5921_hi_cube.fits.gz")
    assert cube["compressed"] is True and cube["depth"] == 56
    image = open_dataset(client, "3c273_continuum.fits.gz")
    assert image["kind"] == "image" and image["active_axes"] == 2 and image["depth"] == 1
    assert image["ctype"][:2] == ["RA---SIN", "DEC--SIN"]
    assert image["beam_major"] == pytest.approx(3.208, abs=1e-3)
    image4 = open_dataset(client, "3c273_continuum_4d.fits.gz")
    assert image4["kind"] == "image" and (image4["width"], image4["height"]) == (256, 256)
    # a real 3-D cube (no Stokes axis)
    with gzip.open(DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz") as handle, fits.open(handle) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data[0].copy()
    for key in ("NAXIS4", "CTYPE4", "CRVAL4", "CDELT4", "CRPIX4", "CUNIT4"):
        header.remove(key, ignore_missing=True)
    for i in range(1, 5):
        header.remove(f"PC{i}_4", ignore_missing=True)
        header.remove(f"PC4_{i}", ignore_missing=True)
    fits.PrimaryHDU(data, header).writeto(data_dir / "cube3d.fits")
    cube3 = open_dataset(client, data_dir / "cube3d.fits")
    assert cube3["kind"] == "cube" and cube3["depth"] == 56 and cube3["cdelt"] == cube["cdelt"]


def _write(path: Path, data: np.ndarray, **cards: object) -> Path:
    hdu = fits.PrimaryHDU(data)
    for key, value in cards.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def test_scaled_integer_with_blank(client: TestClient, data_dir: Path) -> None:
    raw = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    raw[1, 2, 3] = -32768
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.header["BLANK"] = -32768
    hdu.writeto(data_dir / "scaled.fits", output_verify="ignore")
    body = open_dataset(client, data_dir / "scaled.fits")
    assert (body["width"], body["height"], body["depth"]) == (4, 3, 2)
    runtime = client.app.state.runtime
    ds = runtime.sessions.dataset(body["dataset_id"], body["session_id"])
    cube = ds.handle.source.read()
    assert cube.dtype == np.float32 and cube.dtype.byteorder in ("=", "<")
    assert np.isnan(cube[1, 2, 3])
    assert cube[0, 0, 1] == pytest.approx(10.5)
    assert cube[1, 2, 2] == pytest.approx(22 * 0.5 + 10.0)


def test_image_in_extension_after_table(client: TestClient, data_dir: Path) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(3.0))])
    image = fits.ImageHDU(np.ones((5, 6), dtype=np.float32))
    fits.HDUList([fits.PrimaryHDU(), table, image]).writeto(data_dir / "ext.fits")
    body = open_dataset(client, data_dir / "ext.fits")
    assert body["hdu_index"] == 2 and (body["width"], body["height"]) == (6, 5)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.fits", b"", "File is empty"),
        ("text.fits", b"hello world, not a FITS file at all" * 10, "Not a FITS file"),
        ("bad.fits.gz", b"\x1f\x8bnot really gzip", "gzip"),
    ],
)
def test_broken_files(client: TestClient, data_dir: Path, name: str, content: bytes, message: str) -> None:
    (data_dir / name).write_bytes(content)
    body = client.post("/v1/datasets/open", json={"path": str(data_dir / name)}).json()
    assert body["valid"] is False and message in body["error"]


def test_truncated_file(client: TestClient, data_dir: Path) -> None:
    full = _write(data_dir / "full.fits", np.ones((8, 64, 64), dtype=np.float32))
    blob = full.read_bytes()
    (data_dir / "cut.fits").write_bytes(blob[: len(blob) // 2])
    body = client.post("/v1/datasets/open", json={"path": str(data_dir / "cut.fits")}).json()
    assert body["valid"] is False and "truncated" in body["error"]


def test_table_only_file(client: TestClient, data_dir: Path) -> None:
    table = fits.BinTableHDU.from_columns([fits.Column(name="a", format="E", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(data_dir / "table.fits")
    body = client.post("/v1/datasets/open", json={"path": str(data_dir / "table.fits")}).json()
    assert body["valid"] is False and "only tables" in body["error"]


def test_open_outside_roots(client: TestClient) -> None:
    body = client.post("/v1/datasets/open", json={"path": "/etc/passwd"}).json()
    assert body == {"valid": False, "error": "File not found."}


def test_values_match_astropy(client: TestClient, ngc5921: Path) -> None:
    body = open_dataset(client, ngc5921)
    ds = client.app.state.runtime.sessions.dataset(body["dataset_id"], body["session_id"])
    block = ds.handle.source.read(z=slice(20, 23), y=slice(100, 140), x=slice(90, 150))
    expected = fits.getdata(ngc5921)[0, 20:23, 100:140, 90:150]
    np.testing.assert_array_equal(block, expected.astype(np.float32))
    assert math.isnan(float(ds.handle.source.read(z=slice(0, 1), y=slice(0, 1), x=slice(0, 1))[0, 0, 0]))

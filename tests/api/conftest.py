"""Fixtures for API tests: a CPU-backend app on a temporary output dir, token and data roots."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import DEMO_DATA_ROOT, Settings

TOKEN = "test-token-visivo-12345"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A second data root for hand-made files (the demo root is the first)."""
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def settings(tmp_path: Path, data_dir: Path) -> Settings:
    return Settings(
        token=TOKEN,
        token_file=tmp_path / "token",
        output_dir=tmp_path / "out",
        data_roots=f"{DEMO_DATA_ROOT},{data_dir}",
        backend="cpu",
        workers=2,
        heavy_slots=1,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        test_client.headers.update({"X-Visivo-Token": TOKEN})
        yield test_client


@pytest.fixture
def ngc5921(data_dir: Path) -> Path:
    """The real NGC 5921 cube, decompressed into the second data root (4-D, degenerate Stokes)."""
    import gzip

    target = data_dir / "ngc5921_hi_cube.fits"
    with gzip.open(DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz", "rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


def open_dataset(client: TestClient, path: str | Path, session: str | None = None) -> dict:
    headers = {"X-Visivo-Session": session} if session else {}
    response = client.post("/v1/datasets/open", json={"path": str(path)}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["valid"], body
    return body


def write_cube(path: Path, data, *, crval3: float = 1.0e5, cdelt3: float = -5.0e3, bunit: str = "Jy/beam") -> Path:
    """Write a (nz, ny, nx) float32 cube with a RA/Dec/VRAD WCS (m/s) to ``path``."""
    import numpy as np
    from astropy.io import fits

    header = fits.Header()
    ny, nx = data.shape[1:]
    for i, (ctype, cunit, crval, cdelt, crpix) in enumerate(
        [("RA---SIN", "deg", 230.5, -0.004, nx / 2 + 0.5), ("DEC--SIN", "deg", 5.0, 0.004, ny / 2 + 0.5),
         ("VRAD", "m/s", crval3, cdelt3, 1.0)], start=1):
        header[f"CTYPE{i}"], header[f"CUNIT{i}"], header[f"CRVAL{i}"] = ctype, cunit, crval
        header[f"CDELT{i}"], header[f"CRPIX{i}"] = cdelt, crpix
    header["BUNIT"] = bunit
    header["BMAJ"], header["BMIN"], header["BPA"] = 0.01, 0.008, 30.0
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header).writeto(path, overwrite=True)
    return path


def decode(body: dict, key: str = "data_base64", shape: tuple | None = None):
    from app.services.encoding import decode_array

    flat = decode_array(body[key], body.get("compression") or "none")
    return flat.reshape(shape) if shape else flat

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

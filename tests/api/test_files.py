"""/v1/files/list and /v1/files/header, including escapes from the data roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.settings import DEMO_DATA_ROOT


def test_fresh_start_lists_demo_files(client: TestClient) -> None:
    body = client.get("/v1/files/list").json()
    assert body["valid"] is True
    assert body["current_path"] == str(DEMO_DATA_ROOT)
    names = {e["name"]: e for e in body["entries"]}
    for expected in ("ngc5921_hi_cube.fits.gz", "3c273_continuum.fits.gz", "catalogue_sky.csv",
                     "galaxies.bin", "galaxies.bin.head"):
        assert expected in names
    cube = names["ngc5921_hi_cube.fits.gz"]
    assert cube["is_fits"] is True and cube["type"] == "file"
    assert cube["size"] == (DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz").stat().st_size
    assert cube["modified_time"].endswith("Z") and "T" in cube["modified_time"]
    assert names["catalogue_sky.csv"]["is_fits"] is False


def test_directories_first_then_case_insensitive(client: TestClient, data_dir: Path) -> None:
    (data_dir / "b_dir").mkdir()
    (data_dir / "A_dir").mkdir()
    (data_dir / "a.fits").write_bytes(b"")
    (data_dir / "B.txt").write_text("x")
    (data_dir / ".hidden").write_text("x")
    body = client.get("/v1/files/list", params={"path": str(data_dir)}).json()
    assert [e["name"] for e in body["entries"]] == ["A_dir", "b_dir", "a.fits", "B.txt"]
    assert body["entries"][0]["type"] == "directory"


@pytest.mark.parametrize(
    "path",
    ["/etc", "/etc/..x", "does-not-exist", "/proc/../etc"],
)
def test_list_escape_looks_like_not_found(client: TestClient, path: str) -> None:
    body = client.get("/v1/files/list", params={"path": path}).json()
    assert body == {"valid": False, "error": "Directory not found."}


def test_symlink_escape_refused(client: TestClient, data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "x.fits").write_bytes(b"SIMPLE  =                    T")
    os.symlink(outside, data_dir / "link")
    os.symlink(outside / "x.fits", data_dir / "file_link.fits")
    assert client.get("/v1/files/list", params={"path": str(data_dir / "link")}).json()["error"] == (
        "Directory not found."
    )
    names = [e["name"] for e in client.get("/v1/files/list", params={"path": str(data_dir)}).json()["entries"]]
    assert "link" not in names and "file_link.fits" not in names
    header = client.post("/v1/files/header", json={"path": str(data_dir / "file_link.fits")}).json()
    assert header == {"valid": False, "error": "File not found."}
    opened = client.post("/v1/datasets/open", json={"path": str(data_dir / "link" / "x.fits")}).json()
    assert opened == {"valid": False, "error": "File not found."}


@pytest.mark.parametrize("path", ["/etc/passwd", "../../../../etc/passwd", "/etc/hostname", "nope.fits"])
def test_header_escape_looks_like_not_found(client: TestClient, path: str) -> None:
    assert client.post("/v1/files/header", json={"path": path}).json() == {"valid": False, "error": "File not found."}


def test_header_cards(client: TestClient) -> None:
    body = client.post("/v1/files/header", json={"path": "ngc5921_hi_cube.fits.gz"}).json()
    assert body["valid"] is True
    cards = body["cards"]
    assert cards[0].startswith("SIMPLE  =")
    assert all(len(c) == 80 for c in cards)
    assert any(c.startswith("CTYPE3  = 'VRAD") for c in cards)
    assert any(c.startswith("NAXIS4  =") for c in cards)


def test_header_of_non_fits(client: TestClient) -> None:
    body = client.post("/v1/files/header", json={"path": "catalogue_sky.csv"}).json()
    assert body["valid"] is False and "Not a FITS file" in body["error"]

"""Issue 12 item 6 and issue 11 item 7: previews, sub-volumes and images stay within the response limit.

A cube preview without ``downsample`` picks the smallest step whose payload fits a quarter of
``VISIVO_MAX_RESPONSE_MB``; explicit requests past the limit (or past the memory budget) get a clear
error naming both sizes. Expected steps and sizes are computed here by brute force from the formula
``len(base64) = 4·ceil(4·voxels/3)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import DEMO_DATA_ROOT, Settings
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube

SHAPE = (64, 128, 128)  # (z, y, x): 4 MiB of float32, 5.3 MiB as base64


def _b64(voxels: int) -> int:
    return 4 * math.ceil(4 * voxels / 3)


def _client(tmp_path: Path, **extra) -> TestClient:
    settings = Settings(token=TOKEN, token_file=tmp_path / "token", output_dir=tmp_path / "out",
                        data_roots=f"{DEMO_DATA_ROOT},{tmp_path}", backend="cpu", workers=2, heavy_slots=1, **extra)
    client = TestClient(create_app(settings))
    client.headers.update({"X-Visivo-Token": TOKEN})
    return client


@pytest.fixture
def cube(tmp_path: Path) -> np.ndarray:
    data = np.random.default_rng(7).normal(size=SHAPE).astype(np.float32)
    write_cube(tmp_path / "cube.fits", data)
    return data


@pytest.fixture
def small_limit(tmp_path: Path) -> Iterator[TestClient]:
    with _client(tmp_path, max_response_mb=1) as client:
        yield client


def _post(client: TestClient, route: str, opened: dict, **body) -> dict:
    response = client.post(route, json={"dataset_id": opened["dataset_id"], **body},
                           headers={"X-Visivo-Session": opened["session_id"]})
    assert response.status_code == 200, response.text
    return response.json()


def test_preview_without_downsample_fits_a_quarter_of_the_limit(small_limit: TestClient, tmp_path: Path,
                                                                cube: np.ndarray) -> None:
    opened = open_dataset(small_limit, tmp_path / "cube.fits")
    target = (1 << 20) // 4
    step = next(s for s in range(1, 129) if _b64(math.prod(-(-n // s) for n in SHAPE)) <= target)
    assert step == 3  # 22·43·43 voxels -> 216 924 base64 bytes; step 2 would be 699 052
    body = _post(small_limit, "/v1/cube/preview", opened)
    assert body["valid"] and body["downsample"] == step and body["downsample_auto"] is True
    assert (body["depth"], body["height"], body["width"]) == (22, 43, 43)
    assert len(body["data_base64"]) == _b64(22 * 43 * 43) <= target
    np.testing.assert_array_equal(decode(body, shape=(22, 43, 43)), cube[::3, ::3, ::3])


def test_explicit_requests_past_the_limit_are_refused(small_limit: TestClient, tmp_path: Path,
                                                      cube: np.ndarray) -> None:
    opened = open_dataset(small_limit, tmp_path / "cube.fits")
    full = _b64(math.prod(SHAPE)) / 2**20
    body = _post(small_limit, "/v1/cube/preview", opened, downsample=1)
    assert body == {"valid": False, "error": (
        f"Cube preview of 128×128×64 voxels (downsample 1): the answer would be about {full:.1f} MiB, over the "
        "response limit of 1.0 MiB (VISIVO_MAX_RESPONSE_MB); ask for a smaller region or a larger downsample.")}
    two = _post(small_limit, "/v1/cube/preview", opened, downsample=2)
    assert two["valid"] and two["downsample_auto"] is False
    np.testing.assert_array_equal(decode(two, shape=(32, 64, 64)), cube[::2, ::2, ::2])
    whole = _post(small_limit, "/v1/cube/subvolume", opened)
    assert not whole["valid"] and whole["error"].startswith(
        f"Sub-volume of 128×128×64 voxels: the answer would be about {full:.1f} MiB, "
        "over the response limit of 1.0 MiB")
    part = _post(small_limit, "/v1/cube/subvolume", opened, x0=10, x1=49, y0=5, y1=44, z0=3, z1=40)
    assert part["valid"]
    np.testing.assert_array_equal(decode(part, shape=(38, 40, 40)), cube[3:41, 5:45, 10:50])


def test_full_image_past_the_limit_and_memory_budget(tmp_path: Path) -> None:
    image = np.random.default_rng(3).normal(size=(600, 700)).astype(np.float32)
    fits.PrimaryHDU(image).writeto(tmp_path / "img.fits")
    with _client(tmp_path, max_response_mb=1) as client:
        opened = open_dataset(client, tmp_path / "img.fits")
        full = _post(client, "/v1/image/full", opened, format="float32")
        assert full == {"valid": False, "error": (
            f"Image of 700×600 pixels: the answer would be about {_b64(420_000) / 2**20:.1f} MiB, over the response "
            "limit of 1.0 MiB (VISIVO_MAX_RESPONSE_MB); ask for a smaller region or a larger downsample.")}
        png = _post(client, "/v1/image/full", opened)  # noise compresses badly: ~1.6 MB of PNG, known once encoded
        assert not png["valid"] and "over the response limit of 1.0 MiB" in png["error"]
        small = _post(client, "/v1/image/preview", opened, format="float32", max_longest_side=350)
        assert small["valid"] and (small["width"], small["height"]) == (350, 300)
    with _client(tmp_path, memory_budget_mb=16) as client:  # 20 B per voxel of 2^20 voxels: 20 MiB > 16 MiB
        write_cube(tmp_path / "cube.fits", np.zeros(SHAPE, dtype=np.float32))
        opened = open_dataset(client, tmp_path / "cube.fits")
        body = _post(client, "/v1/cube/subvolume", opened)
        assert body == {"valid": False, "error": (
            "Sub-volume of 128×128×64 voxels needs about 20.0 MiB of memory, over the per-request memory budget of "
            "16.0 MiB (VISIVO_MEMORY_BUDGET_MB); ask for a smaller region, a larger step or downsample.")}


def test_demo_cube_preview_defaults_to_a_small_answer(tmp_path: Path) -> None:
    """Issue 11 item 7: the demo cube's preview was 19.5 MB of JSON; now it stays under 16 MiB (64/4)."""
    with _client(tmp_path) as client:
        opened = open_dataset(client, "ngc5921_hi_cube.fits.gz")
        body = _post(client, "/v1/cube/preview", opened)
        shape = (opened["depth"], opened["height"], opened["width"])
        assert body["valid"] and body["downsample"] == 2 and _b64(math.prod(shape)) > 16 << 20
        assert len(body["data_base64"]) == _b64(math.prod(-(-n // 2) for n in shape)) <= 16 << 20

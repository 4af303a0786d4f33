"""Sessions: session-less access by id, foreign-session 404 naming the session, idle expiry closing files,
the per-session dataset cap, and a clear error (not an accept storm) near the file-descriptor limit."""

from __future__ import annotations

import base64
import gc
import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import TOKEN, open_dataset, write_cube


def _fds_on(path: Path) -> int:
    """Descriptors of this process open on ``path`` (mmap duplicates included)."""
    target = str(path.resolve())
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.path.realpath(f"/proc/self/fd/{name}") == target
        except OSError:
            continue
    return count


@pytest.fixture
def cube(data_dir: Path) -> tuple[Path, np.ndarray]:
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    return write_cube(data_dir / "small.fits", data), data


def _make_client(settings: Settings, **overrides) -> TestClient:
    return TestClient(create_app(settings.model_copy(update=overrides)), headers={"X-Visivo-Token": TOKEN})


def test_sessionless_request_addresses_dataset_by_id(client: TestClient, cube) -> None:
    path, data = cube
    opened = open_dataset(client, path, session="sess_owner")
    res = client.post("/v1/cube/slice", json={"dataset_id": opened["dataset_id"], "index": 2})  # no session header
    assert res.status_code == 200 and res.json()["valid"], res.text
    plane = np.frombuffer(base64.b64decode(res.json()["data_base64"]), dtype="<f4").reshape(5, 6)
    np.testing.assert_array_equal(plane, data[2])


def test_foreign_session_gets_404_naming_the_session(client: TestClient, cube) -> None:
    path, _ = cube
    ds = open_dataset(client, path, session="sess_owner")["dataset_id"]
    res = client.post("/v1/cube/slice", json={"dataset_id": ds, "index": 0},
                      headers={"X-Visivo-Session": "sess_intruder"})
    assert res.status_code == 404
    assert res.json() == {"valid": False, "error": f"Dataset {ds} not found in session sess_intruder"}
    unknown = client.get("/v1/datasets/ds_000000000000")
    assert unknown.status_code == 404 and unknown.json()["error"] == "Dataset ds_000000000000 not found"


def test_idle_session_expires_and_closes_its_files(settings: Settings, cube) -> None:
    path, _ = cube
    with _make_client(settings, session_ttl_seconds=600) as client:
        idle = open_dataset(client, path, session="sess_idle")["dataset_id"]
        assert client.post("/v1/cube/slice", json={"dataset_id": idle, "index": 1},
                           headers={"X-Visivo-Session": "sess_idle"}).json()["valid"]
        assert _fds_on(path) >= 1
        registry = client.app.state.runtime.sessions
        assert registry.expire(now=time.time() + 601) == 1  # as if 601 s had passed without a call
        gc.collect()
        assert _fds_on(path) == 0  # the memmap and the file are closed
        gone = client.get(f"/v1/datasets/{idle}", headers={"X-Visivo-Session": "sess_idle"})
        assert gone.status_code == 404
        stats = client.get("/v1/sessions").json()
        assert stats["open_datasets"] == 0 and stats["sessions_expired_total"] == 1


def test_recent_session_survives_expiry(settings: Settings, cube) -> None:
    path, _ = cube
    with _make_client(settings, session_ttl_seconds=600) as client:
        ds = open_dataset(client, path, session="sess_busy")["dataset_id"]
        assert client.app.state.runtime.sessions.expire(now=time.time() + 300) == 0
        assert client.get(f"/v1/datasets/{ds}", headers={"X-Visivo-Session": "sess_busy"}).status_code == 200


def test_dataset_cap_per_session(settings: Settings, cube) -> None:
    path, _ = cube
    with _make_client(settings, max_datasets_per_session=2) as client:
        for _ in range(2):
            open_dataset(client, path, session="sess_cap")
        before = _fds_on(path)
        refused = client.post("/v1/datasets/open", json={"path": str(path)}, headers={"X-Visivo-Session": "sess_cap"})
        body = refused.json()
        assert refused.status_code == 200 and body["valid"] is False
        assert "VISIVO_MAX_DATASETS_PER_SESSION = 2" in body["error"] and "sess_cap" in body["error"]
        gc.collect()
        assert _fds_on(path) == before  # the refused open released its file
        assert open_dataset(client, path, session="sess_other")["valid"]  # the cap is per session


def test_out_of_descriptors_is_a_clear_error(settings: Settings, data_dir: Path) -> None:
    files = [write_cube(data_dir / f"c{i}.fits", np.full((2, 3, 4), i, np.float32)) for i in range(12)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with _make_client(settings, max_datasets_per_session=10_000) as client:
        answers = []
        in_use = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 24, hard))  # reserve max(16, limit // 8) = 16
        try:
            for i in range(200):
                res = client.post("/v1/datasets/open", json={"path": str(files[i % len(files)])},
                                  headers={"X-Visivo-Session": "sess_many"})
                assert res.status_code == 200
                answers.append(res.json())
                if not answers[-1]["valid"]:
                    break
            health = client.get("/v1/health")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert answers[-1]["valid"] is False and "Too many open files" in answers[-1]["error"]
    assert 1 <= sum(a["valid"] for a in answers) < 24  # refused before the descriptors ran out
    assert health.status_code == 200  # the server still answers

"""Async task lifecycle (done, error, cancel, TTL) and the product cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.services.tasks import TaskRegistry
from tests.api.conftest import decode, open_dataset, write_cube


def _poll(client: TestClient, task_id: str, timeout: float = 30.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        body = client.get(f"/v1/tasks/{task_id}").json()
        if body["status"] in ("done", "error", "completed", "failed"):
            return body
        time.sleep(0.02)
    raise AssertionError("task did not finish")


@pytest.fixture
def cube(client: TestClient, data_dir: Path) -> tuple[dict, dict]:
    data = np.random.default_rng(5).normal(0, 1, (9, 20, 24)).astype(np.float32)
    body = open_dataset(client, write_cube(data_dir / "t.fits", data))
    return body, {"X-Visivo-Session": body["session_id"]}


def test_pv_task_done_then_cache_hit(client: TestClient, cube) -> None:
    body, headers = cube
    req = {"dataset_id": body["dataset_id"], "vertices": [[1, 1], [15, 12]], "width_pixels": 2}
    created = client.post("/v1/tasks/pv", json=req, headers=headers).json()
    assert created["valid"] and created["task_id"].startswith("task_") and created["cache_hit"] is False
    done = _poll(client, created["task_id"])
    assert done["status"] == "done" and done["progress"] == 1.0 and done["operation"] == "pv"
    sync = client.post("/v1/cube/pv", json=req, headers=headers).json()
    assert sync["cache_hit"] is True
    assert done["result"]["data_base64"] == sync["data_base64"]
    again = client.post("/v1/tasks/pv", json=req, headers=headers).json()
    assert again["cache_hit"] is True
    assert _poll(client, again["task_id"])["cache_hit"] is True
    health = client.get("/v1/health").json()
    assert health["product_cache_entries"] >= 1 and health["task_registry_entries"] == 2


def test_task_error_and_unknown(client: TestClient, cube) -> None:
    body, headers = cube
    created = client.post("/v1/tasks/pv", json={"dataset_id": body["dataset_id"],
                                                 "vertices": [[500, 500], [600, 600]]}, headers=headers).json()
    # a path outside the image fails in the job: the task ends in error with the message
    failed = _poll(client, created["task_id"])
    assert failed["status"] == "error" and "outside" in failed["error"] and failed["result"] is None
    assert client.get("/v1/tasks/task_0000000000000000").status_code == 404
    assert client.delete("/v1/tasks/task_0000000000000000").status_code == 404


def test_cancel_running_task_frees_slot(client: TestClient, cube, monkeypatch: pytest.MonkeyPatch) -> None:
    body, headers = cube
    import app.services.pv as pv_service

    original = pv_service.pv_diagram

    def slow(ctx, *args, **kwargs):
        for i in range(2000):
            ctx.progress(i / 2000)
            time.sleep(0.005)
        return original(ctx, *args, **kwargs)

    monkeypatch.setattr(pv_service, "pv_diagram", slow)
    created = client.post("/v1/tasks/pv", json={"dataset_id": body["dataset_id"], "vertices": [[1, 1], [9, 9]]},
                          headers=headers).json()
    deadline = time.time() + 10
    while client.get(f"/v1/tasks/{created['task_id']}").json()["progress"] == 0 and time.time() < deadline:
        time.sleep(0.02)
    status = client.get(f"/v1/tasks/{created['task_id']}").json()
    assert status["status"] == "running" and 0 < status["progress"] < 1
    deleted = client.delete(f"/v1/tasks/{created['task_id']}").json()
    assert deleted["deleted"] is True
    assert client.get(f"/v1/tasks/{created['task_id']}").status_code == 404
    lanes = client.get("/v1/health").json()["lanes"]
    assert lanes[0]["running"] == 0 and lanes[0]["outstanding"] == 0
    monkeypatch.setattr(pv_service, "pv_diagram", original)
    quick = client.post("/v1/cube/pv", json={"dataset_id": body["dataset_id"], "vertices": [[2, 2], [9, 9]]},
                        headers=headers).json()
    assert quick["valid"] is True


def test_legacy_status_spelling() -> None:
    registry = TaskRegistry(60, status_style="legacy")
    assert registry._spell("done") == "completed" and registry._spell("error") == "failed"
    assert registry._spell("running") == "running"


def test_ttl_expiry(client: TestClient, cube) -> None:
    body, headers = cube
    created = client.post("/v1/tasks/pv", json={"dataset_id": body["dataset_id"], "vertices": [[1, 1], [5, 5]]},
                          headers=headers).json()
    _poll(client, created["task_id"])
    registry = client.app.state.runtime.tasks
    assert registry.expire(now=time.time() + 10) == 0
    assert registry.expire(now=time.time() + 3601) == 1
    assert client.get(f"/v1/tasks/{created['task_id']}").status_code == 404


def test_cache_is_lru_and_keyed_by_parameters(client: TestClient, cube) -> None:
    body, headers = cube
    runtime = client.app.state.runtime
    runtime.cache.capacity = 2
    reqs = [{"dataset_id": body["dataset_id"], "vertices": [[1, 1], [k, 9]]} for k in (5, 6, 7)]
    first = [client.post("/v1/cube/pv", json=r, headers=headers).json()["cache_hit"] for r in reqs]
    assert first == [False, False, False] and len(runtime.cache) == 2
    assert client.post("/v1/cube/pv", json=reqs[2], headers=headers).json()["cache_hit"] is True
    assert client.post("/v1/cube/pv", json=reqs[0], headers=headers).json()["cache_hit"] is False  # evicted
    res = client.post("/v1/cube/pv", json=reqs[0], headers=headers).json()
    assert res["cache_hit"] is True and decode(res).size == 9 * res["num_samples"]

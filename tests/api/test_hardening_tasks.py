"""Tasks are scoped like datasets, and submissions past the heavy queue answer HTTP 429 at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube


def _poll(client: TestClient, task_id: str, headers: dict | None = None) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"/v1/tasks/{task_id}", headers=headers or {}).json()
        if body["status"] in ("done", "error"):
            return body
        time.sleep(0.02)
    raise AssertionError("task did not finish")


@pytest.fixture
def cube_data() -> np.ndarray:
    return np.random.default_rng(8).normal(0, 1, (9, 6, 7)).astype(np.float32)


def test_task_belongs_to_its_session(client: TestClient, data_dir: Path, cube_data: np.ndarray) -> None:
    opened = open_dataset(client, write_cube(data_dir / "own.fits", cube_data), session="sess_a")
    owner = {"X-Visivo-Session": "sess_a"}
    created = client.post("/v1/tasks/moment", json={"dataset_id": opened["dataset_id"], "order": 8},
                          headers=owner).json()
    task = created["task_id"]
    done = _poll(client, task, owner)
    assert done["status"] == "done"
    np.testing.assert_allclose(decode(done["result"]).reshape(6, 7), cube_data.max(axis=0), rtol=1e-6)

    intruder = {"X-Visivo-Session": "sess_b"}
    read = client.get(f"/v1/tasks/{task}", headers=intruder)
    assert read.status_code == 404
    assert read.json() == {"valid": False, "error": f"Task {task} not found in session sess_b"}
    assert client.delete(f"/v1/tasks/{task}", headers=intruder).status_code == 404
    assert client.get(f"/v1/tasks/{task}").json()["status"] == "done"  # no session header: by id
    assert client.delete(f"/v1/tasks/{task}", headers=owner).json()["deleted"] is True
    assert client.get(f"/v1/tasks/{task}").status_code == 404


def test_submissions_past_the_queue_answer_429_at_once(settings: Settings, data_dir: Path,
                                                       cube_data: np.ndarray) -> None:
    """One slot held by a blocked job, a queue of 2: exactly 2 of 10 submissions are accepted."""
    app = create_app(settings.model_copy(update={"heavy_slots": 1, "heavy_queue_limit": 2}))
    release = threading.Event()

    def blocker(ctx: object) -> str:
        release.wait(60)
        return "released"

    with TestClient(app, headers={"X-Visivo-Token": TOKEN}) as client:
        runtime = client.app.state.runtime
        ds = open_dataset(client, write_cube(data_dir / "q.fits", cube_data))["dataset_id"]
        held = client.portal.start_task_soon(runtime.dispatcher.run_heavy, blocker)
        while runtime.dispatcher.lanes[0].running < 1:  # wait until the blocker holds the slot
            time.sleep(0.01)
        answers = [client.post("/v1/tasks/moment",
                               json={"dataset_id": ds, "order": 8, "channel_start": 0, "channel_end": end})
                   for end in range(1, 9)]
        codes = [a.status_code for a in answers]
        release.set()
        assert held.result(timeout=60) == "released"
        assert codes == [200, 200] + [429] * 6, codes
        for refused in answers[2:]:
            assert refused.json() == {"valid": False, "error": refused.json()["error"]}
            assert "busy" in refused.json()["error"].lower()
        for end, accepted in zip((1, 2), answers[:2], strict=True):
            done = _poll(client, accepted.json()["task_id"])
            assert done["status"] == "done", done
            expected = cube_data[: end + 1].max(axis=0)
            np.testing.assert_allclose(decode(done["result"]).reshape(6, 7), expected, rtol=1e-6)
        # with the queue drained, submissions are accepted again
        again = client.post("/v1/tasks/moment", json={"dataset_id": ds, "order": 8, "channel_end": 5})
        assert again.status_code == 200 and _poll(client, again.json()["task_id"])["status"] == "done"

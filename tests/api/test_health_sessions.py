"""/v1/health, /v1/sessions and /v1/sessions/{id}/datasets."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import open_dataset

REFERENCE_FIELDS = {
    "ok", "workers", "active_sessions", "product_cache_entries", "product_cache_capacity",
    "task_registry_entries", "task_ttl_enabled", "task_ttl_seconds",
}


def test_health_fields_are_live(client: TestClient) -> None:
    before = client.get("/v1/health").json()
    assert set(before) >= REFERENCE_FIELDS
    assert before["ok"] is True and before["valid"] is True
    assert before["backend"] == "cpu" and before["devices"] == [] and before["version"]
    assert before["workers"] == 2 and before["heavy_slots"] == 1
    assert before["product_cache_capacity"] == 64 and before["task_ttl_seconds"] == 3600
    assert before["task_ttl_enabled"] is True
    assert before["active_sessions"] == 0
    open_dataset(client, "3c273_continuum.fits.gz")
    open_dataset(client, "3c273_continuum.fits.gz")
    after = client.get("/v1/health").json()
    assert after["active_sessions"] == 2  # two opens without a session header: two sessions
    assert after["capabilities"]["moment"]["tier"] == "heavy"


def test_sessions_and_datasets(client: TestClient) -> None:
    first = open_dataset(client, "ngc5921_hi_cube.fits.gz")
    sid = first["session_id"]
    second = open_dataset(client, "3c273_continuum.fits.gz", session=sid)
    assert second["session_id"] == sid
    listing = client.get(f"/v1/sessions/{sid}/datasets").json()
    assert listing["session_id"] == sid
    rows = {row["dataset_id"]: row for row in listing["datasets"]}
    assert rows[first["dataset_id"]] == {
        "dataset_id": first["dataset_id"], "kind": "cube", "path": first["path"],
        "width": 256, "height": 256, "depth": 56,
    }
    assert rows[second["dataset_id"]]["kind"] == "image"
    stats = client.get("/v1/sessions").json()
    assert stats["active_sessions"] == 1 and stats["open_datasets"] == 2
    assert stats["datasets_by_kind"] == {"cube": 1, "image": 1}


def test_unknown_session_is_404(client: TestClient) -> None:
    response = client.get("/v1/sessions/sess_unknown/datasets")
    assert response.status_code == 404
    assert response.json() == {"valid": False, "error": "Session not found."}


def test_foreign_and_unknown_dataset_are_404(client: TestClient) -> None:
    opened = open_dataset(client, "3c273_continuum.fits.gz")
    ds = opened["dataset_id"]
    own = client.get(f"/v1/datasets/{ds}", headers={"X-Visivo-Session": opened["session_id"]})
    assert own.status_code == 200 and own.json()["width"] == 256
    other = open_dataset(client, "3c273_continuum.fits.gz")["session_id"]
    foreign = client.get(f"/v1/datasets/{ds}", headers={"X-Visivo-Session": other})
    unknown = client.get("/v1/datasets/ds_ffffffffffff", headers={"X-Visivo-Session": other})
    for response in (foreign, unknown):
        assert response.status_code == 404
        assert response.json()["valid"] is False
    assert foreign.json()["error"] == f"Dataset {ds} not found in session {other}"
    assert client.get(f"/v1/datasets/{ds}").status_code == 200  # no session header: addressed by id (issue 11)
    closed = client.delete(f"/v1/datasets/{ds}", headers={"X-Visivo-Session": opened["session_id"]})
    assert closed.json()["closed"] is True
    assert client.get(f"/v1/datasets/{ds}", headers={"X-Visivo-Session": opened["session_id"]}).status_code == 404


def test_validation_error_names_the_field(client: TestClient) -> None:
    response = client.post("/v1/datasets/open", json={"not_path": 1})
    assert response.status_code == 422
    body = response.json()
    assert body["valid"] is False and "path" in body["error"]


def test_unknown_extra_fields_tolerated(client: TestClient) -> None:
    body = client.post("/v1/datasets/open", json={"path": "3c273_continuum.fits.gz", "threshold_auto": True}).json()
    assert body["valid"] is True

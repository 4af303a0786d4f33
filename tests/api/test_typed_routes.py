"""The table, cosmology, resolve, HiPS, SAMP and meta routes: registered operations and typed, documented answers."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from astropy.cosmology import Planck15
from fastapi.testclient import TestClient

from app.operations import registry
from app.operations.defs.cosmology_batch import BatchResponse

#: Routes that became registered operations: operation name → (method, path).
OPERATIONS = {
    "catalogue_open": ("POST", "/v1/catalogue/open"),
    "catalogue_query": ("POST", "/v1/catalogue/query"),
    "catalogue_subset": ("POST", "/v1/catalogue/subset"),
    "vbt_open": ("POST", "/v1/vbt/open"),
    "vbt_query": ("POST", "/v1/vbt/query"),
    "vbt_subset": ("POST", "/v1/vbt/subset"),
    "cosmology_distance": ("POST", "/v1/cosmology/distance"),
    "cosmology_batch": ("POST", "/v1/cosmology/distance/batch"),
    "resolve_target": ("POST", "/v1/resolve/target"),
}
#: Hand-written JSON routes: (method, path) → whether they take a JSON body model.
JSON_ROUTES = {
    ("GET", "/v1/health"): False,
    ("GET", "/v1/sessions"): False,
    ("GET", "/v1/sessions/{session_id}/datasets"): False,
    ("POST", "/v1/hips/open"): True,
    ("POST", "/v1/hips/{survey_id}/query_tiles"): True,
    ("POST", "/v1/hips/catalogue_overlay"): True,
    ("GET", "/v1/samp/status"): False,
    ("POST", "/v1/samp/hub-status"): False,
    ("POST", "/v1/samp/connect"): True,
    ("POST", "/v1/samp/disconnect"): False,
    ("POST", "/v1/samp/send"): True,
    ("POST", "/v1/samp/receive"): True,
    ("GET", "/v1/samp/pending"): False,
    ("GET", "/v1/samp/inbox"): False,
    ("POST", "/v1/samp/files/register"): True,
    ("POST", "/v1/samp/upload-file"): False,
    ("POST", "/v1/samp/import-url"): True,
    ("POST", "/v1/samp/send-fits"): True,
    ("POST", "/v1/samp/send-catalogue"): True,
}
BYTE_ROUTES = {
    "/v1/hips/{survey_id}/allsky": {"image/png", "image/jpeg", "image/webp", "application/fits"},
    "/v1/hips/{survey_id}/tile/{order}/{pix}": {"image/png", "image/jpeg", "image/webp", "application/fits"},
    "/v1/samp/files/{token}": {"application/fits", "application/x-votable+xml", "text/csv"},
}


def _component(schema: dict[str, Any], ref_holder: dict[str, Any]) -> dict[str, Any]:
    ref = ref_holder.get("$ref") or next(o["$ref"] for o in ref_holder["anyOf"] if "$ref" in o)  # optional body
    return schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]


def _undescribed(component: dict[str, Any]) -> list[str]:
    return [name for name, prop in component.get("properties", {}).items() if not prop.get("description")]


@pytest.fixture
def schema(client: TestClient) -> dict[str, Any]:
    response = client.get("/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def test_moved_routes_are_operations_without_kernels() -> None:
    ops = registry.operations()
    for name, (method, path) in OPERATIONS.items():
        op = ops[name]
        assert [(r.method, r.path) for r in op.routes] == [(method, path)]
        cap = op.capability
        assert cap.kernels == () and not cap.gpu_kernel and cap.tier == "interactive"
        assert len(cap.no_gpu_reason) > 20, name
        assert not op.cached and not op.offers_task()


def test_every_route_documents_typed_models(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    routes = {**{(m, p): True for m, p in OPERATIONS.values()}, **JSON_ROUTES}
    for (method, path), has_body in routes.items():
        entry = paths[path][method.lower()]
        for status in ("401", "404", "422"):
            assert status in entry["responses"], (path, status)
        answer = _component(schema, entry["responses"]["200"]["content"]["application/json"]["schema"])
        assert answer.get("description") and not _undescribed(answer), (path, _undescribed(answer))
        assert {"valid", "error"} <= set(answer["properties"]), path
        if has_body:
            body = _component(schema, entry["requestBody"]["content"]["application/json"]["schema"])
            assert body.get("examples") and not _undescribed(body), (path, _undescribed(body))
        if path.startswith("/v1/samp/"):
            assert "403" in entry["responses"], path
    for path, media in BYTE_ROUTES.items():
        entry = paths[path]["get"]
        assert media <= set(entry["responses"]["200"]["content"]), path
        assert all(p.get("description") for p in entry["parameters"]), path
    upload = paths["/v1/samp/upload-file"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/octet-stream"} <= set(upload)


def test_cosmology_batch_answer_matches_its_model_and_astropy(client: TestClient) -> None:
    redshifts = [0.1, -1.0, None, 2.0, 0.0]
    body = client.post("/v1/cosmology/distance/batch", json={
        "redshifts": redshifts, "model": "planck15", "kind": ["luminosity", "da"]}).json()
    BatchResponse.model_validate(body)  # the rendered (fast-path) answer still matches its documented model
    assert body["valid"] and body["model"] == "Planck15" and body["unit"] == "Mpc"
    assert body["count"] == 5 and body["invalid_count"] == 2
    assert body["kind"] == ["luminosity", "angular_diameter"]
    valid = np.array([0.1, 2.0, 0.0])
    for key, reference in (("distances_Mpc", Planck15.comoving_distance),
                           ("luminosity_distances_Mpc", Planck15.luminosity_distance),
                           ("angular_diameter_distances_Mpc", Planck15.angular_diameter_distance)):
        values = body[key]
        assert values[1] is None and values[2] is None, key
        got = np.array([values[0], values[3], values[4]], dtype=float)
        np.testing.assert_allclose(got, reference(valid).to_value("Mpc"), rtol=1e-6, atol=1e-9, err_msg=key)


def test_health_lists_the_moved_operations(client: TestClient) -> None:
    health = client.get("/v1/health").json()
    for name in OPERATIONS:
        row = health["capabilities"][name]
        assert row["gpu_kernel"] is False and row["module"] is None and row["no_gpu_reason"], name

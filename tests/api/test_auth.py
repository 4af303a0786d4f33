"""Token authentication on every route (SAMP excepted) and the token file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings

ROUTES = [
    ("get", "/v1/health", None),
    ("get", "/v1/sessions", None),
    ("get", "/v1/sessions/nope/datasets", None),
    ("get", "/v1/files/list", None),
    ("post", "/v1/files/header", {"path": "x.fits"}),
    ("post", "/v1/datasets/open", {"path": "x.fits"}),
    ("get", "/v1/datasets/ds_000000000000", None),
    ("get", "/v1/openapi.json", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_missing_token_is_401(client: TestClient, method: str, path: str, body: dict | None) -> None:
    response = getattr(client, method)(path, json=body, headers={"X-Visivo-Token": ""}) if body else getattr(
        client, method
    )(path, headers={"X-Visivo-Token": ""})
    assert response.status_code == 401
    assert response.json()["valid"] is False
    assert response.json()["error"]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_wrong_token_is_401(client: TestClient, method: str, path: str, body: dict | None) -> None:
    kwargs = {"headers": {"X-Visivo-Token": "wrong"}}
    if body:
        kwargs["json"] = body
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == 401
    assert response.json() == {"valid": False, "error": "Invalid token."}


def test_absent_header_is_401(settings: Settings) -> None:
    with TestClient(create_app(settings)) as bare:
        response = bare.get("/v1/health")
    assert response.status_code == 401
    assert "X-Visivo-Token" in response.json()["error"]


def test_random_token_written_with_mode_0600(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(token=None, token_file=tmp_path / "t" / "tok", output_dir=tmp_path / "o", backend="cpu")
    with TestClient(create_app(settings)) as bare:
        token = settings.token_file.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(settings.token_file.stat().st_mode) == 0o600
        assert bare.get("/v1/health", headers={"X-Visivo-Token": token}).json()["ok"] is True
    printed = capsys.readouterr().out
    assert printed.count(token) == 1
    # a second start draws a different token
    with TestClient(create_app(settings)):
        assert settings.token_file.read_text().strip() != token


def test_health_has_request_id(client: TestClient) -> None:
    response = client.get("/v1/health")
    assert response.headers.get("X-Request-ID")


def test_every_api_route_requires_the_token(client: TestClient) -> None:
    """Every documented route but SAMP (loopback-only, token-free by design) answers 401 without the token."""
    import re

    checked = 0
    for path, operations in client.app.openapi()["paths"].items():
        if path.startswith("/v1/samp"):
            continue
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        for method in operations:
            response = client.request(method.upper(), concrete, headers={"X-Visivo-Token": "wrong"}, json={})
            assert response.status_code == 401, (method, path, response.status_code)
            checked += 1
    assert checked >= 45

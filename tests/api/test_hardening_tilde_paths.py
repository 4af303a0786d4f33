"""``~user`` paths from clients are never expanded: every path-taking route answers "not found", never 500,
and an existing account (``~root``) answers exactly like a missing one (no local-account oracle)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.io.paths import FILE_NOT_FOUND, confine
from app.main import create_app
from app.routers import samp as samp_router
from app.settings import Settings
from tests.api.conftest import TOKEN

EXISTING = "~root"
MISSING = "~nosuchuser_visivo_x"


@pytest.fixture
def local_client(settings: Settings) -> Iterator[TestClient]:
    """A client that looks local (SAMP routes answer loopback only) and never re-raises server errors."""
    app = create_app(settings)
    if "/v1/samp/status" not in {getattr(r, "path", "") for r in app.routes}:
        app.include_router(samp_router.router)
    with TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 50000),
                    raise_server_exceptions=False) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        yield client


def _calls(user: str) -> dict[str, tuple[str, str, dict]]:
    """route name -> (method, url, request kwargs) for a path under ``user``'s home."""
    fits_path = f"{user}/cube.fits"
    return {
        "files/header": ("POST", "/v1/files/header", {"json": {"path": fits_path}}),
        "files/list": ("GET", "/v1/files/list", {"params": {"path": f"{user}/"}}),
        "datasets/open": ("POST", "/v1/datasets/open", {"json": {"path": fits_path}}),
        "catalogue/open": ("POST", "/v1/catalogue/open", {"json": {"path": f"{user}/t.csv"}}),
        "vbt/open": ("POST", "/v1/vbt/open", {"json": {"path": f"{user}/g.bin"}}),
        "hips/open": ("POST", "/v1/hips/open", {"json": {"url": f"{user}/survey"}}),
        "js9/analysis": ("POST", "/api/visualization/js9/analysis",
                         {"json": {"task": "imstat", "image_path": fits_path}}),
        "js9/file": ("GET", "/api/visualization/js9/file", {"params": {"path": fits_path}}),
        "samp/files/register": ("POST", "/v1/samp/files/register", {"json": {"path": fits_path}}),
    }


def _answer(client: TestClient, method: str, url: str, kwargs: dict, user: str) -> tuple[int, object]:
    """Status and body, the body with the echoed user name replaced (some errors quote the client's path)."""
    response = client.request(method, url, **kwargs)
    body = response.json()
    if isinstance(body, dict):  # JS9 answers carry a timing; it is not part of the comparison
        body.pop("execution_time_sec", None)
    return response.status_code, json.loads(json.dumps(body).replace(user, "<user>"))


@pytest.mark.parametrize("route", sorted(_calls("~x")))
def test_tilde_user_paths_answer_not_found_identically(local_client: TestClient, route: str) -> None:
    method, url, kwargs = _calls(EXISTING)[route]
    existing = _answer(local_client, method, url, kwargs, EXISTING)
    method, url, kwargs = _calls(MISSING)[route]
    missing = _answer(local_client, method, url, kwargs, MISSING)
    assert existing[0] < 500 and missing[0] < 500, (existing, missing)
    assert existing == missing  # same status, same body: the account's existence is not revealed
    text = str(existing[1]).lower()
    assert "not found" in text or "no such" in text or "unreachable" in text, existing


def test_confine_never_expands_tilde(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    for raw in ("~", "~/x.fits", "~root/x.fits", f"{MISSING}/x.fits", "~root"):
        with pytest.raises(Exception) as info:
            confine(raw, [root])
        assert getattr(info.value, "message", "") in (FILE_NOT_FOUND, "Directory not found.")
    literal = root / "~root"
    literal.mkdir()
    (literal / "x.fits").write_bytes(b"SIMPLE")
    assert confine("~root/x.fits", [root]) == literal / "x.fits"  # a literal name under the root

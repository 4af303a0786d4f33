"""Issue 12 (errors, body limit) over a real uvicorn server: a 500 keeps the keep-alive connection,
is logged once with its request id, and bodies past ``VISIVO_MAX_REQUEST_MB`` answer 413 before parsing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.live_server import serve

TOKEN = "guard-test-token-0123456789"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    settings = Settings(token=TOKEN, token_file=tmp_path / "token", output_dir=tmp_path / "out", backend="cpu",
                        workers=2, heavy_slots=1, max_request_mb=1)
    app = create_app(settings)

    @app.get("/v1/test-only/boom")
    async def boom() -> dict:  # a route that fails the way a bug would
        raise RuntimeError("simulated bug")

    with serve(app, log_config=None, lifespan="on", access_log=False) as url:
        yield url


def test_internal_error_keeps_connection_and_logs_once(server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    with httpx.Client(base_url=server, headers={"X-Visivo-Token": TOKEN}, timeout=30) as client:
        first = client.get("/v1/test-only/boom", headers={"X-Request-ID": "req-boom-1"})
        assert first.status_code == 500
        assert first.json() == {"valid": False, "error": "Internal error: RuntimeError (request req-boom-1)"}
        assert first.headers["x-request-id"] == "req-boom-1"
        second = client.get("/v1/health")  # the same pooled keep-alive connection
        assert second.status_code == 200 and second.json()["valid"] is True
        third = client.get("/v1/test-only/boom")
        assert third.status_code == 500 and third.json()["error"].startswith("Internal error: RuntimeError (request ")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in errors if "Exception in ASGI application" in r.getMessage()]
    ours = [r for r in errors if "req-boom-1" in r.getMessage()]
    assert len(ours) == 1 and ours[0].exc_info is not None


def test_body_limit_by_content_length_and_by_stream(server: str) -> None:
    big = b'{"path": "' + b"a" * (1 << 20) + b'"}'  # just over 1 MiB
    with httpx.Client(base_url=server, headers={"X-Visivo-Token": TOKEN}, timeout=30) as client:
        declared = client.post("/v1/datasets/open", content=big, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413
        assert declared.json() == {"valid": False, "error": (
            "Request body too large (1.0 MiB): the limit is 1 MiB (VISIVO_MAX_REQUEST_MB).")}

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for k in range(0, len(big), 65536):
                yield big[k:k + 65536]

        streamed = client.post("/v1/datasets/open", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.json()["error"] == "Request body too large: the limit is 1 MiB (VISIVO_MAX_REQUEST_MB)."
    with httpx.Client(base_url=server, headers={"X-Visivo-Token": TOKEN}, timeout=30) as client:
        small = client.post("/v1/datasets/open", json={"path": "nope.fits"})
        assert small.status_code == 200 and small.json()["valid"] is False  # under the limit: parsed as usual


def test_malformed_json_answers_422_with_the_error_body(server: str) -> None:
    with httpx.Client(base_url=server, headers={"X-Visivo-Token": TOKEN, "Content-Type": "application/json"},
                      timeout=30) as client:
        bad = client.post("/v1/datasets/open", content=b'{"path": ')
        assert bad.status_code == 422
        assert bad.json() == {"valid": False,
                              "error": "Invalid request: malformed JSON body (Expecting value at character 9)"}
        not_utf8 = client.post("/v1/datasets/open", content=b'{"path": "\xff\xfe"}')
        assert not_utf8.status_code == 422
        assert not_utf8.json() == {"valid": False, "error": "Invalid request: the body is not valid JSON."}

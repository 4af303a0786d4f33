"""A bounded schemathesis run over the whole OpenAPI schema, in process, with the token.

Every operation gets ``EXAMPLES`` generated requests (hypothesis with ``derandomize=True``: a fixed
seed, the same requests every run). Asserted for every answer: no 5xx, no exception in the
transport, and a 4xx answers JSON with the API's error body (``{"valid": false, "error"}``, or
JS9's ``{"detail"}``). SAMP routes that need a hub or the network are skipped. The run prints
how many requests were sent (``-s`` shows it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from app.main import create_app
from app.settings import Settings
from tests.api.conftest import TOKEN

#: Generated requests per operation (57 fuzzed operations: ~1,300 requests, 25-45 s on 2 shared cores).
EXAMPLES = int(os.environ.get("VISIVO_FUZZ_EXAMPLES", "25"))
#: Routes that need a running SAMP hub or the network.
SKIPPED = {
    ("POST", "/v1/samp/connect"), ("POST", "/v1/samp/send"), ("POST", "/v1/samp/send-fits"),
    ("POST", "/v1/samp/send-catalogue"), ("POST", "/v1/samp/import-url"),
}
BASE = "http://127.0.0.1:8000"


def _httpx_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """schemathesis' requests-style arguments as httpx (TestClient) arguments."""
    out: dict[str, Any] = {"method": kwargs["method"], "url": kwargs["url"]}
    headers = {k: str(v) for k, v in (kwargs.get("headers") or {}).items()}
    headers["X-Visivo-Token"] = TOKEN
    out["headers"] = headers
    if kwargs.get("params"):
        out["params"] = kwargs["params"]
    if "json" in kwargs:
        out["json"] = kwargs["json"]
    data = kwargs.get("data")
    if isinstance(data, (bytes, str)):
        out["content"] = data
    elif data is not None:
        out["data"] = data
    if kwargs.get("files"):
        out["files"] = [_as_file_part(part) for part in kwargs["files"]]
    return out


def _as_file_part(part: Any) -> Any:
    """A generated multipart part whose content is not bytes/str/file (e.g. a negative-mode integer) is sent
    as its text, the way any HTTP client would serialise it (httpx itself cannot send an int)."""
    name, value = part
    if isinstance(value, tuple):
        filename, content, *rest = value
        if not isinstance(content, (bytes, str)) and not hasattr(content, "read"):
            content = json.dumps(content)
        return name, (filename, content, *rest)
    if not isinstance(value, (bytes, str)) and not hasattr(value, "read"):
        value = json.dumps(value)
    return name, value


def _error_body_ok(path: str, response: Any) -> str | None:
    """``None`` when a 4xx answer is JSON with the error body; otherwise what is wrong."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"non-JSON {response.status_code}: {response.text[:120]!r}"
    if not isinstance(body, dict):
        return f"{response.status_code} body is not an object"
    if path.startswith("/api/visualization/js9"):
        return None if "detail" in body or body.get("success") is False else f"JS9 error body {body}"
    if body.get("valid") is False and isinstance(body.get("error"), str) and body["error"]:
        return None
    return f"{response.status_code} without the error body: {str(body)[:160]}"


@pytest.fixture
def fuzz_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={
        "sesame_url": "", "hips_timeout_seconds": 1.0, "samp_watch_seconds": 0.0,
        "samp_lockfile_dir": tmp_path / "no-hub", "workers": 2,
    })


class Tally:
    """Requests sent, status counts and the problems found."""

    def __init__(self) -> None:
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.problems: list[str] = []

    def record(self, label: str, path: str, request: dict[str, Any], response: Any) -> None:
        self.statuses[response.status_code] += 1
        if response.status_code >= 500:
            self.problems.append(f"{label} -> {response.status_code}: {response.text[:200]} "
                                 f"(request {json.dumps(request, default=str)[:300]})")
        elif response.status_code >= 400 and (why := _error_body_ok(path, response)):
            self.problems.append(f"{label}: {why}")


def _fuzz_operation(client: TestClient, operation: Any, tally: Tally) -> None:
    """``EXAMPLES`` positive and negative requests of one operation (fixed seed), tallied."""
    label, path = f"{operation.method.upper()} {operation.path}", operation.path
    strategy = operation.as_strategy() | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)

    @given(case=strategy, _=st.just(None))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def fuzz(case: Any, _: None) -> None:
        request = _httpx_kwargs(case.as_transport_kwargs(base_url=BASE))
        tally.sent += 1
        try:
            response = client.request(**request)
        except Exception as exc:  # a transport failure: the connection did not survive
            tally.problems.append(f"{label}: {type(exc).__name__}: {exc}")
            return
        tally.record(label, path, request, response)

    fuzz()


def test_schema_fuzz_no_server_errors(fuzz_settings: Settings) -> None:
    app = create_app(fuzz_settings)
    schema = schemathesis.openapi.from_dict(app.openapi())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 50
    fuzzed = [op for op in operations if (op.method.upper(), op.path) not in SKIPPED]
    tally = Tally()
    with warnings.catch_warnings(), TestClient(app, base_url=BASE, client=("127.0.0.1", 50000),
                                               raise_server_exceptions=False) as client:
        warnings.simplefilter("ignore")  # production filters: a numerical warning is not an error there
        for operation in fuzzed:
            _fuzz_operation(client, operation, tally)
    print(f"schemathesis: {tally.sent} requests over {len(fuzzed)} operations, "
          f"statuses {dict(sorted(tally.statuses.items()))}")
    assert tally.sent >= len(fuzzed)
    assert not tally.problems, "\n".join(tally.problems[:40])

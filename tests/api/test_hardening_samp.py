"""SAMP hardening: the lockfile is the configured one only, read safely (FIFO, NUL, garbage, size), with one
answer for every unusable lockfile, no file I/O under the service lock, and strict Origin/Host parsing."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routers import samp as samp_router
from app.services.samp import service as samp_service_module
from app.services.samp.hub import MAX_LOCKFILE_BYTES, no_hub_message, read_lockfile
from app.services.samp.origin import is_loopback_host_header, is_loopback_origin
from app.services.samp.service import CLIENT_LOCKFILE_REFUSED
from app.settings import Settings

LOOPBACK = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SAMP_HUB", raising=False)


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    path = tmp_path / "hubdir"
    path.mkdir()
    return path


@pytest.fixture
def samp(settings: Settings, hub_dir: Path) -> Iterator[TestClient]:
    """Loopback client of an app whose configured lockfile is ``hub_dir/.samp`` (no watchdog)."""
    app = create_app(settings.model_copy(update={"samp_lockfile_dir": hub_dir, "samp_watch_seconds": 0}))
    if "/v1/samp/status" not in {getattr(r, "path", "") for r in app.routes}:
        app.include_router(samp_router.router)
    with TestClient(app, raise_server_exceptions=False, **LOOPBACK) as client:
        yield client


def _in_thread(fn, timeout: float = 20.0):  # noqa: ANN001, ANN202
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) if it does not return."""
    box: list = []

    def run() -> None:
        try:
            box.append((True, fn()))
        except Exception as exc:  # re-raised in the caller
            box.append((False, exc))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    assert not worker.is_alive(), "the call blocked"
    ok, value = box[0]
    if not ok:
        raise value
    return value


def test_client_cannot_name_a_lockfile(samp: TestClient, tmp_path: Path) -> None:
    existing = tmp_path / "secret.txt"
    existing.write_text("samp.secret=x\n")
    answers = [samp.post("/v1/samp/connect", json={"lockfile": p}) for p in
               (str(existing), str(tmp_path / "missing.lock"), "/etc/passwd", "~root/.samp", "x\x00y")]
    for res in answers:  # one fixed answer: nothing about the named file is revealed
        assert res.status_code == 200 and res.json() == {"valid": False, "error": CLIENT_LOCKFILE_REFUSED}
    status = samp.get("/v1/samp/status").json()
    assert status["valid"] and status["auto_reconnect"] is False and status["lockfile"] is None


def test_one_answer_for_every_unusable_lockfile(samp: TestClient, hub_dir: Path) -> None:
    lock = hub_dir / ".samp"
    expected = {"valid": False, "error": no_hub_message(lock)}
    cases = {
        "missing": None,
        "garbage": b"\xff\xfe not properties at all",
        "no-url": b"samp.secret=abc\n",
        "nul": b"samp.secret=ab\x00c\nsamp.hub.xmlrpc.url=http://127.0.0.1:9/\n",
        "ftp-url": b"samp.secret=abc\nsamp.hub.xmlrpc.url=ftp://127.0.0.1:9/\n",
        "bad-port": b"samp.secret=abc\nsamp.hub.xmlrpc.url=http://127.0.0.1:99999/\n",
        "too-big": b"samp.secret=abc\nsamp.hub.xmlrpc.url=http://127.0.0.1:9/\n#" + b"x" * MAX_LOCKFILE_BYTES,
        "directory": "dir",
    }
    for name, content in cases.items():
        if lock.is_dir():
            lock.rmdir()
        elif lock.exists():
            lock.unlink()
        if content == "dir":
            lock.mkdir()
        elif content is not None:
            lock.write_bytes(content)
        res = samp.post("/v1/samp/connect")
        assert res.status_code == 200 and res.json() == expected, name
        for call in (lambda: samp.get("/v1/samp/status"), lambda: samp.post("/v1/samp/hub-status", json={})):
            later = call()
            assert later.status_code == 200 and later.json()["valid"], name  # never wedged, never 500
            assert later.json()["last_error"] == expected["error"] and later.json()["connected"] is False


def test_fifo_lockfile_never_blocks(samp: TestClient, hub_dir: Path) -> None:
    fifo = hub_dir / ".samp"
    os.mkfifo(fifo)
    res = _in_thread(lambda: samp.post("/v1/samp/connect", json={"lockfile": str(fifo)}))  # the configured path
    assert res.json() == {"valid": False, "error": no_hub_message(fifo)}
    status = _in_thread(lambda: samp.get("/v1/samp/status"))
    assert status.status_code == 200 and status.json()["auto_reconnect"] is True
    beat = _in_thread(lambda: samp.post("/v1/samp/hub-status", json={"hub_running": False}))
    assert beat.status_code == 200 and beat.json()["connected"] is False
    with pytest.raises(Exception, match="No running SAMP hub"):
        _in_thread(lambda: read_lockfile(fifo))


def test_lockfile_is_read_without_the_service_lock(samp: TestClient, hub_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    (hub_dir / ".samp").write_text("samp.secret=abc\nsamp.hub.xmlrpc.url=http://127.0.0.1:9/\n")
    samp.get("/v1/samp/status")
    service = samp.app.state.runtime.samp
    held: list[bool] = []
    real = samp_service_module.read_lockfile

    def spy(path: Path) -> dict[str, str]:
        held.append(service._lock._is_owned())
        return real(path)

    monkeypatch.setattr(samp_service_module, "read_lockfile", spy)
    samp.post("/v1/samp/connect")
    samp.get("/v1/samp/status")
    samp.post("/v1/samp/hub-status", json={})
    samp.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky", "params": {"ra": 1, "dec": 2}})
    assert len(held) >= 4 and not any(held)


@pytest.mark.parametrize(("origin", "allowed"), [
    ("http://localhost:5173", True),
    ("http://127.0.0.1", True),
    ("https://127.0.0.2:8443", True),
    ("http://[::1]:8000", True),
    ("http://evil.com\\@localhost", False),
    ("http://evil.com\\@localhost:8000", False),
    ("http://localhost@evil.com", False),
    ("http://user:pw@localhost", False),
    ("http://localhost.evil.com", False),
    ("http://evil.localhost", False),
    ("ftp://localhost", False),
    ("localhost", False),
    ("null", False),
    ("http://localhost:99999", False),
    ("http://localhost/path", False),
    ("http://127.0.0.1.nip.io", False),
])
def test_strict_origin(samp: TestClient, origin: str, allowed: bool) -> None:
    assert is_loopback_origin(origin) is allowed
    res = samp.get("/v1/samp/status", headers={"Origin": origin})
    assert res.status_code == (200 if allowed else 403), origin
    if not allowed:
        assert res.json() == {"valid": False, "error": "Cross-origin requests to SAMP routes are refused."}


@pytest.mark.parametrize(("host", "allowed"), [
    ("127.0.0.1:8000", True), ("localhost", True), ("[::1]:8000", True),
    ("evil.com\\@localhost", False), ("evil.com@localhost", False), ("localhost:80@evil.com", False),
    ("evil.example", False), ("localhost:", False), ("127.0.0.1:8000/x", False),
])
def test_strict_host_header(host: str, allowed: bool) -> None:
    assert is_loopback_host_header(host) is allowed


def test_host_header_with_userinfo_refused(samp: TestClient) -> None:
    res = samp.get("/v1/samp/status", headers={"Host": "evil.com\\@localhost"})
    assert res.status_code == 403

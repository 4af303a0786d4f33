"""SAMP routes against a real in-process hub and a real second SAMP client, all on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import io
import queue
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from astropy.io.votable import parse_single_table
from astropy.table import Table
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pyvo.samp import SAMPHubServer, SAMPIntegratedClient

from app.main import create_app
from app.routers import samp as samp_router
from app.services.samp.hub import read_lockfile
from app.services.samp.messages import STANDARD_MTYPES
from app.services.samp.multipart import MultipartError, UploadTooLarge, read_multipart
from app.settings import DEMO_DATA_ROOT, Settings
from tests.api.conftest import TOKEN

LOOPBACK = {"base_url": "http://127.0.0.1:8000", "client": ("127.0.0.1", 50000)}


# -- fixtures ---------------------------------------------------------------------------------
def wired_app(settings: Settings) -> FastAPI:
    """The app with the SAMP router included WITHOUT the token dependency, unless app.main already does."""
    app = create_app(settings)
    if "/v1/samp/status" not in {getattr(r, "path", "") for r in app.routes}:
        app.include_router(samp_router.router)
    return app


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyvo's hub looks at ~/.samp (and removes dead lockfiles there): point HOME at a temporary directory."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("SAMP_HUB", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def samp_client(settings: Settings) -> Iterator[TestClient]:
    """A client that looks local to the server (loopback address and Host)."""
    with TestClient(wired_app(settings), **LOOPBACK) as client:
        yield client


class Hubs:
    """Start/stop in-process hubs on 127.0.0.1 with their lockfile in a temporary directory."""

    def __init__(self, lockfile: Path) -> None:
        self.lockfile = lockfile
        self.hub: SAMPHubServer | None = None

    def start(self) -> SAMPHubServer:
        self.hub = SAMPHubServer(web_profile=False, addr="127.0.0.1", lockfile=str(self.lockfile))
        self.hub.start(wait=False)
        return self.hub

    def stop(self) -> None:
        if self.hub is not None and self.hub.is_running:
            self.hub.stop()
        self.hub = None


@pytest.fixture
def hubs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Hubs]:
    manager = Hubs(tmp_path / "samp-hub.lock")
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{manager.lockfile.as_uri()}")  # the server's configured hub
    try:
        yield manager
    finally:
        manager.stop()


class Peer:
    """A second SAMP application (like TOPCAT or Aladin) subscribed to the standard MTypes."""

    def __init__(self, lockfile: Path, name: str = "test-peer") -> None:
        self.received: queue.Queue[tuple[str, dict, str]] = queue.Queue()
        self.client = SAMPIntegratedClient(name=name, addr="127.0.0.1")
        self.client.connect(hub_params=read_lockfile(lockfile))
        for mtype in STANDARD_MTYPES:
            self.client.bind_receive_notification(mtype, self._notified, declare=False)
        self.client.declare_subscriptions()

    def _notified(self, private_key: str, sender_id: str, mtype: str, params: dict, extra: dict) -> None:
        self.received.put((mtype, params, sender_id))

    @property
    def client_id(self) -> str:
        return self.client.client.get_public_id()

    def next(self, timeout: float = 5.0) -> tuple[str, dict, str]:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        if self.client.is_connected:
            self.client.disconnect()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(lockfile: Path, name: str = "test-peer") -> Peer:
        made.append(Peer(lockfile, name))
        return made[-1]

    try:
        yield make
    finally:
        for peer in made:
            peer.close()


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server for import-url; yields (base URL, served directory)."""
    site = tmp_path / "site"
    site.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.startswith("/to-file"):
                self.send_response(302)
                self.send_header("Location", "file:///etc/hostname")
                self.end_headers()
                return
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _ok(response: Any) -> dict:
    body = response.json()
    assert response.status_code == 200 and body["valid"], body
    return body


def _wait_inbox(client: TestClient, count: int, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        messages = _ok(client.get("/v1/samp/inbox", params={"since": 0}))["messages"]
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.05)


def _service(client: TestClient):  # noqa: ANN202 (the app's SampService)
    client.get("/v1/samp/status")
    return client.app.state.runtime.samp


# -- access -------------------------------------------------------------------------------------
def test_loopback_only_without_token(settings: Settings) -> None:
    app = wired_app(settings)
    with TestClient(app, **LOOPBACK) as local:
        body = _ok(local.get("/v1/samp/status"))  # no X-Visivo-Token needed
        assert body["connected"] is False and body["client_name"] == "VisIVO Server"
        assert local.get("/v1/samp/status", headers={"Origin": "http://localhost:5173"}).status_code == 200
        refused = local.get("/v1/samp/status", headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403 and refused.json()["valid"] is False
        assert local.get("/v1/samp/status", headers={"Host": "evil.example"}).status_code == 403
    for client_addr in (("192.168.1.20", 40000), ("testclient", 50000), ("10.0.0.1", 1)):
        with TestClient(app, base_url="http://127.0.0.1:8000", client=client_addr) as remote:
            res = remote.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky", "params": {"ra": 1, "dec": 2}})
            assert res.status_code == 403, client_addr
            assert res.json() == {"valid": False, "error": "SAMP routes answer requests from this machine "
                                                           "(loopback) only."}
    with TestClient(app, base_url="http://[::1]:8000", client=("::1", 50000)) as ipv6:
        assert ipv6.get("/v1/samp/status").status_code == 200


# -- hub, messages ------------------------------------------------------------------------------
def test_exchange_with_a_peer(samp_client: TestClient, hubs: Hubs, peers, monkeypatch: pytest.MonkeyPatch) -> None:
    hubs.start()
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{hubs.lockfile.as_uri()}")
    status = _ok(samp_client.post("/v1/samp/connect"))
    assert status["connected"] and status["client_id"] and status["lockfile"] == str(hubs.lockfile)
    peer = peers(hubs.lockfile)
    listed = {p["name"]: p for p in _ok(samp_client.get("/v1/samp/status"))["peers"]}
    assert listed["test-peer"]["mtypes"] == list(STANDARD_MTYPES)

    sent = _ok(samp_client.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky",
                                                       "params": {"ra": 187.2779, "dec": 2.0524}}))
    assert sent["sent"] and sent["recipients"] == [peer.client_id]
    assert peer.next()[:2] == ("coord.pointAt.sky", {"ra": "187.2779", "dec": "2.0524"})
    _ok(samp_client.post("/v1/samp/send", json={"mtype": "table.highlight.row", "recipient": "TEST-PEER",
                                                "params": {"table-id": "t1", "url": "http://x/t.vot", "row": 3}}))
    assert peer.next()[:2] == ("table.highlight.row", {"table-id": "t1", "url": "http://x/t.vot", "row": "3"})
    _ok(samp_client.post("/v1/samp/send", json={"mtype": "table.select.rowList", "recipient": peer.client_id,
                                                "params": {"table-id": "t1", "row-list": [1, 2, 5]}}))
    assert peer.next()[1] == {"table-id": "t1", "row-list": ["1", "2", "5"]}

    fits_sent = _ok(samp_client.post("/v1/samp/send-fits", json={"path": "3c273_continuum.fits.gz"}))
    mtype, params, sender = peer.next()
    assert mtype == "image.load.fits" and sender == status["client_id"]
    assert params == {"url": fits_sent["url"], "image-id": fits_sent["token"], "name": "3c273_continuum.fits.gz"}
    image = samp_client.get(params["url"])
    assert image.headers["content-type"] == "application/fits"
    assert image.content == (DEMO_DATA_ROOT / "3c273_continuum.fits.gz").read_bytes()

    cat_sent = _ok(samp_client.post("/v1/samp/send-catalogue", json={"path": "catalogue_sky.csv", "name": "sky"}))
    mtype, params, _ = peer.next()
    assert mtype == "table.load.votable" and params["name"] == "sky" and cat_sent["converted"] is True
    served = samp_client.get(params["url"])
    assert served.headers["content-type"] == "application/x-votable+xml"
    votable = parse_single_table(io.BytesIO(served.content)).to_table()
    csv = Table.read(DEMO_DATA_ROOT / "catalogue_sky.csv", format="ascii.csv")
    assert len(votable) == len(csv) and list(votable["name"]) == list(csv["name"])

    # the peer talks to the server: a notification and a call (acknowledged with samp.ok)
    server_id = status["client_id"]
    peer.client.notify(server_id, {"samp.mtype": "coord.pointAt.sky", "samp.params": {"ra": "10.5", "dec": "-3"}})
    assert len(_wait_inbox(samp_client, 1)) == 1  # hub deliveries are asynchronous: keep the order certain
    reply = peer.client.call_and_wait(server_id, {"samp.mtype": "table.load.votable",
                                                  "samp.params": {"url": "http://127.0.0.1:1/t.vot"}}, timeout="5")
    assert reply["samp.status"] == "samp.ok"
    inbox = _wait_inbox(samp_client, 2)
    assert [(m["mtype"], m["kind"], m["sender_name"]) for m in inbox] == [
        ("coord.pointAt.sky", "notification", "test-peer"), ("table.load.votable", "call", "test-peer")]
    assert inbox[0]["params"] == {"ra": "10.5", "dec": "-3"}


def test_inbox_sessions_and_bridge(samp_client: TestClient) -> None:
    _ok(samp_client.post("/v1/samp/receive", json={"mtype": "coord.pointAt.sky", "params": {"ra": 1, "dec": 2}}))
    _ok(samp_client.post("/v1/samp/receive", json={"mtype": "image.load.fits", "params": {"url": "http://x/a.fits"},
                                                   "session_id": "s2", "sender": "cli#9"}))
    s1 = {"X-Visivo-Session": "s1"}
    first = _ok(samp_client.get("/v1/samp/inbox", headers=s1))["messages"]
    assert [m["mtype"] for m in first] == ["coord.pointAt.sky"] and first[0]["params"] == {"ra": "1", "dec": "2"}
    assert _ok(samp_client.get("/v1/samp/inbox", headers=s1))["messages"] == []  # pulled already
    assert len(_ok(samp_client.get("/v1/samp/inbox", headers=s1, params={"since": 0}))["messages"]) == 1
    s2 = _ok(samp_client.get("/v1/samp/inbox", headers={"X-Visivo-Session": "s2"}))["messages"]
    assert [m["mtype"] for m in s2] == ["coord.pointAt.sky", "image.load.fits"] and s2[1]["sender_id"] == "cli#9"

    assert _ok(samp_client.post("/v1/samp/hub-status"))["connected"] is False  # heartbeat without a body
    bad = samp_client.post("/v1/samp/send", json={"mtype": "not an mtype!", "params": {}}).json()
    assert bad["valid"] is False and "MType" in bad["error"]
    missing = samp_client.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky", "params": {"ra": 1}}).json()
    assert missing["valid"] is False and "dec" in missing["error"]


def test_queue_reconnect_and_hub_restart(samp_client: TestClient, hubs: Hubs, peers) -> None:
    lock = {"lockfile": str(hubs.lockfile)}
    refused = samp_client.post("/v1/samp/connect", json=lock).json()
    assert refused["valid"] is False and "No running SAMP hub" in refused["error"]
    queued = _ok(samp_client.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky",
                                                         "params": {"ra": 5, "dec": 6}}))
    assert queued["queued"] and not queued["sent"]
    assert [m["mtype"] for m in _ok(samp_client.get("/v1/samp/pending", params={"peek": True}))["messages"]] == [
        "coord.pointAt.sky"]

    hubs.start()
    peer = peers(hubs.lockfile)
    beat = _ok(samp_client.post("/v1/samp/hub-status", json={"hub_running": True}))
    assert beat["connected"] and beat["pending"] == 0 and beat["last_heartbeat"]["hub_running"] is True
    assert peer.next()[:2] == ("coord.pointAt.sky", {"ra": "5", "dec": "6"})  # the queue was flushed
    first_url = beat["hub_url"]

    peer.close()
    hubs.stop()
    hubs.start()  # a new hub: new secret, new port, same lockfile
    peer2 = peers(hubs.lockfile, "second-peer")
    status = _ok(samp_client.get("/v1/samp/status"))
    assert status["connected"] and status["reconnects"] == 1 and status["hub_url"] != first_url
    assert "second-peer" in {p["name"] for p in status["peers"]}
    _ok(samp_client.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky", "params": {"ra": 7, "dec": 8}}))
    assert peer2.next()[1] == {"ra": "7", "dec": "8"}
    unknown = samp_client.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky", "recipient": "nobody",
                                                      "params": {"ra": 7, "dec": 8}}).json()
    assert unknown["valid"] is False and "recipient" in unknown["error"]

    assert _ok(samp_client.post("/v1/samp/disconnect"))["connected"] is False
    _ok(samp_client.post("/v1/samp/send", json={"mtype": "coord.pointAt.sky", "params": {"ra": 1, "dec": 1}}))
    assert len(_ok(samp_client.get("/v1/samp/pending"))["messages"]) == 1  # pulled by a bridge ...
    assert _ok(samp_client.get("/v1/samp/pending"))["messages"] == []  # ... and gone


# -- files --------------------------------------------------------------------------------------
def test_file_tokens(samp_client: TestClient, data_dir: Path, tmp_path: Path) -> None:
    fits_body = _ok(samp_client.post("/v1/samp/files/register", json={"path": "3c273_continuum.fits.gz"}))
    again = _ok(samp_client.post("/v1/samp/files/register", json={"path": str(DEMO_DATA_ROOT / "3c273_continuum"
                                                                                                ".fits.gz")}))
    csv_body = _ok(samp_client.post("/v1/samp/files/register", json={"path": "catalogue_sky.csv"}))
    token = fits_body["token"]
    assert again["token"] == token  # one token per file
    assert csv_body["token"] != token and len(token) >= 43 and len(csv_body["token"]) >= 43
    assert fits_body["url"] == f"http://127.0.0.1:8000/v1/samp/files/{token}"
    res = samp_client.get(f"/v1/samp/files/{token}")
    assert res.headers["content-type"] == "application/fits"
    assert res.content == (DEMO_DATA_ROOT / "3c273_continuum.fits.gz").read_bytes()
    res = samp_client.get(f"/v1/samp/files/{csv_body['token']}")
    assert res.content == (DEMO_DATA_ROOT / "catalogue_sky.csv").read_bytes()
    tokens = {token, csv_body["token"]}
    for i in range(20):
        (data_dir / f"f{i}.fits").write_bytes(b"SIMPLE  =" + bytes(i))
        tokens.add(_ok(samp_client.post("/v1/samp/files/register", json={"path": str(data_dir / f"f{i}.fits")}))
                   ["token"])
    assert len(tokens) == 22  # never shared between files
    still = samp_client.get(f"/v1/samp/files/{token}")  # the first token still serves its own file only
    assert still.content == (DEMO_DATA_ROOT / "3c273_continuum.fits.gz").read_bytes()
    for guess in (token[:-1] + ("A" if token[-1] != "A" else "B"), secrets.token_urlsafe(32), "1", "../etc"):
        assert samp_client.get(f"/v1/samp/files/{guess}").status_code == 404, guess
    outside = tmp_path / "secret.fits"
    outside.write_bytes(b"SIMPLE  =")
    assert samp_client.post("/v1/samp/files/register", json={"path": str(outside)}).json() == {
        "valid": False, "error": "File not found."}


def test_upload_with_size_cap(samp_client: TestClient, settings: Settings) -> None:
    service = _service(samp_client)
    service.config = dataclasses.replace(service.config, max_file_bytes=1000)
    uploads = settings.output_dir / "samp_uploads"
    payload = b"SIMPLE  =" + bytes(500)
    body = _ok(samp_client.post("/v1/samp/upload-file",
                                files={"file": ("../../my image.fits", payload, "application/fits")},
                                data={"note": "hello"}))
    stored = Path(body["path"])
    assert stored.parent == uploads.resolve() and stored.name.endswith("_my_image.fits")
    assert body["uploaded_bytes"] == len(payload) and stored.read_bytes() == payload
    assert samp_client.get(body["url"]).content == payload
    raw = _ok(samp_client.post("/v1/samp/upload-file", params={"filename": "raw.fits"}, content=payload,
                               headers={"Content-Type": "application/octet-stream"}))
    assert Path(raw["path"]).read_bytes() == payload and raw["token"] != body["token"]

    big = samp_client.post("/v1/samp/upload-file", files={"file": ("big.fits", bytes(5000), "application/fits")})
    assert big.status_code == 413 and big.json()["valid"] is False

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap applies while streaming
        for _ in range(10):
            yield bytes(300)

    streamed = samp_client.post("/v1/samp/upload-file", params={"filename": "s.fits"}, content=chunks(),
                                headers={"Content-Type": "application/octet-stream"})
    assert streamed.status_code == 413
    assert sorted(p.name for p in uploads.iterdir()) == sorted([stored.name, Path(raw["path"]).name])
    nofile = samp_client.post("/v1/samp/upload-file", data={"only": "fields"},
                              files={"x": (None, "text")}).json()  # a form without a file part
    assert nofile["valid"] is False


def test_import_url(samp_client: TestClient, web: tuple[str, Path], settings: Settings) -> None:
    base, site = web
    shutil.copy(DEMO_DATA_ROOT / "3c273_continuum.fits.gz", site / "3c273.fits.gz")
    (site / "noext").write_bytes((DEMO_DATA_ROOT / "3c273_continuum.fits.gz").read_bytes())
    session = {"X-Visivo-Session": "sess-import"}
    body = _ok(samp_client.post("/v1/samp/import-url", json={"url": f"{base}/3c273.fits.gz"}, headers=session))
    stored = Path(body["path"])
    assert stored.parent == (settings.output_dir / "samp_imports").resolve()
    assert stored.read_bytes() == (site / "3c273.fits.gz").read_bytes()
    assert body["session_id"] == "sess-import" and body["dataset_id"].startswith("ds_") and body["kind"] == "image"
    assert samp_client.get(body["url"]).content == stored.read_bytes()

    for url in ("file:///etc/hostname", "ftp://127.0.0.1/x.fits", "javascript:alert(1)", f"{base}/to-file"):
        res = samp_client.post("/v1/samp/import-url", json={"url": url}).json()
        assert res["valid"] is False and "Only http and https" in res["error"], url
    missing = samp_client.post("/v1/samp/import-url", json={"url": f"{base}/absent.fits"}).json()
    assert missing["valid"] is False and "Not found" in missing["error"]

    service = _service(samp_client)
    service.config = dataclasses.replace(service.config, max_file_bytes=1000)
    big = samp_client.post("/v1/samp/import-url", json={"url": f"{base}/noext"}).json()
    assert big["valid"] is False and "limit" in big["error"]
    assert not [p for p in (settings.output_dir / "samp_imports").iterdir() if p.name.startswith(".")]


def test_optional_token_requirement(samp_client: TestClient) -> None:
    service = _service(samp_client)
    service.config = dataclasses.replace(service.config, require_token=True)
    assert samp_client.get("/v1/samp/status").status_code == 401
    assert _ok(samp_client.get("/v1/samp/status", headers={"X-Visivo-Token": TOKEN}))["connected"] is False
    body = _ok(samp_client.post("/v1/samp/files/register", json={"path": "catalogue_sky.csv"},
                                headers={"X-Visivo-Token": TOKEN}))
    assert samp_client.get(body["url"]).status_code == 200  # peers fetch files by token alone


def test_watchdog_reconnects_by_itself(samp_client: TestClient, hubs: Hubs) -> None:
    service = _service(samp_client)
    service.config = dataclasses.replace(service.config, watch_interval=0.1)
    hubs.start()
    first = _ok(samp_client.post("/v1/samp/connect", json={"lockfile": str(hubs.lockfile)}))["hub_url"]
    hubs.stop()
    hubs.start()
    deadline = time.monotonic() + 10
    while service.reconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.reconnects == 1
    assert _ok(samp_client.get("/v1/samp/status"))["hub_url"] not in (None, first)


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_multipart_stream_split_anywhere(step: int) -> None:
    boundary = b"xYzBoUnDaRy"
    content = b"SIMPLE  =" + bytes(range(256)) * 3 + b"\r\n--xYzBoUnDaR"  # a near-delimiter inside the data
    body = (b"preamble\r\n--" + boundary + b"\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi there"
            b"\r\n--" + boundary + b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.fits\"\r\n"
            b"Content-Type: application/fits\r\n\r\n" + content + b"\r\n--" + boundary + b"--\r\nepilogue")
    sink = io.BytesIO()

    async def chunks(data: bytes):  # noqa: ANN202
        for i in range(0, len(data), step):
            yield data[i:i + step]

    result = asyncio.run(read_multipart(chunks(body), boundary, lambda name: sink, max_file_bytes=10_000))
    assert (result.file_field, result.filename, result.size) == ("file", "a b.fits", len(content))
    assert sink.getvalue() == content and result.fields == {"note": "hi there"}
    with pytest.raises(UploadTooLarge):
        asyncio.run(read_multipart(chunks(body), boundary, lambda name: io.BytesIO(), max_file_bytes=100))
    with pytest.raises(MultipartError):
        asyncio.run(read_multipart(chunks(body[:-40]), boundary, lambda name: io.BytesIO(), max_file_bytes=10_000))


def test_lockfile_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.services.samp.hub import HubError, lockfile_path

    lock = tmp_path / "jsamp.lock"
    lock.write_text("# written by JSAMP\nsamp.secret=abc\\=1\nsamp.hub.xmlrpc.url=http\\://127.0.0.1\\:4567/xmlrpc\n"
                    "samp.profile.version=1.3\n")
    assert read_lockfile(lock)["samp.hub.xmlrpc.url"] == "http://127.0.0.1:4567/xmlrpc"
    assert read_lockfile(lock)["samp.secret"] == "abc=1"
    assert lockfile_path() == Path.home() / ".samp"
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{lock.as_uri()}")
    assert lockfile_path() == lock
    monkeypatch.setenv("SAMP_HUB", "std-lockurl:http://127.0.0.1:1/lock")
    with pytest.raises(HubError):
        lockfile_path()
    (tmp_path / "bad.lock").write_text("samp.secret=x\n")
    with pytest.raises(HubError):
        read_lockfile(tmp_path / "bad.lock")


def test_configs_read_settings_fields(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from app.services.hips import HipsConfig
    from app.services.samp import SampConfig

    fields = SimpleNamespace(output_dir=tmp_path, hips_cache_megabytes=3, hips_timeout_seconds=2.5,
                             hips_tile_max_megabytes=1, hips_max_tiles=99, samp_max_file_megabytes=7,
                             samp_import_timeout_seconds=9.0, samp_hub_timeout_seconds=1.5, samp_watch_seconds=0.0,
                             samp_require_token=True)
    hips = HipsConfig.from_settings(fields)
    assert (hips.cache_dir, hips.cache_max_bytes, hips.timeout, hips.tile_max_bytes, hips.max_tiles) == (
        tmp_path / ".hips_cache", 3 << 20, 2.5, 1 << 20, 99)
    samp = SampConfig.from_settings(fields)
    assert (samp.max_file_bytes, samp.import_timeout, samp.hub_timeout, samp.watch_interval, samp.require_token) == (
        7 << 20, 9.0, 1.5, 0.0, True)
    defaults = SampConfig.from_settings(SimpleNamespace(output_dir=tmp_path))
    assert defaults.max_file_bytes == 512 << 20 and defaults.require_token is False


def test_frozen_hub_times_out(samp_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    service = _service(samp_client)
    service.config = dataclasses.replace(service.config, hub_timeout=0.3, watch_interval=0)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        lock = tmp_path / "frozen.lock"
        lock.write_text(f"samp.secret=s\nsamp.hub.xmlrpc.url=http://127.0.0.1:{silent.getsockname()[1]}/\n")
        monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{lock.as_uri()}")
        started = time.monotonic()
        res = samp_client.post("/v1/samp/connect", json={"lockfile": str(lock)}).json()
        assert res["valid"] is False and "Cannot register" in res["error"]
        assert time.monotonic() - started < 5

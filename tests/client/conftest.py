"""One live server (a real ``visivo-server`` subprocess on a free loopback port) for the client tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.settings import DEMO_DATA_ROOT
from visivo_client import Client

TOKEN = "client-test-token-0123456789"
REPO = Path(__file__).resolve().parents[2]
CUBE = "ngc5921_hi_cube.fits.gz"
IMAGE = "3c273_continuum.fits.gz"


@dataclass
class LiveServer:
    url: str
    token: str
    output_dir: Path
    port: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="package")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``python -m app.cli`` with a fixed token, the demo data and a temporary output directory (CPU backend)."""
    tmp = tmp_path_factory.mktemp("live")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}
    env.update(VISIVO_TOKEN=TOKEN, VISIVO_TOKEN_FILE=str(tmp / "token"), VISIVO_OUTPUT_DIR=str(tmp / "out"),
               VISIVO_DATA_ROOTS=str(DEMO_DATA_ROOT), VISIVO_BACKEND="cpu", VISIVO_WORKERS="2",
               VISIVO_LOG_LEVEL="warning")
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {(tmp / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/v1/health", headers={"X-Visivo-Token": TOKEN}, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail("server did not start in 60 s")
            time.sleep(0.2)
        yield LiveServer(url=url, token=TOKEN, output_dir=tmp / "out", port=port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[Client]:
    with Client(live_server.url, live_server.token, progress=False) as c:
        yield c


class Raw:
    """The wire itself (httpx, no client code): the reference the client's numbers are compared with."""

    def __init__(self, server: LiveServer, session: str | None) -> None:
        headers = {"X-Visivo-Token": server.token, **({"X-Visivo-Session": session} if session else {})}
        self.http = httpx.Client(base_url=server.url, headers=headers, timeout=120)

    def post(self, route: str, body: dict) -> dict:
        response = self.http.post(route, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, route: str, **params) -> httpx.Response:
        return self.http.get(route, params=params)


@pytest.fixture
def raw_for(live_server: LiveServer) -> Iterator:
    """``raw_for(client)``: raw HTTP in the client's session."""
    made: list[Raw] = []

    def make(c: Client | None = None) -> Raw:
        made.append(Raw(live_server, c.session_id if c is not None else None))
        return made[-1]

    yield make
    for raw in made:
        raw.http.close()

"""The real server as a subprocess on a free loopback port, driven over HTTP like a client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(port: int, path: str, token: str, body: dict | None = None, session: str | None = None) -> dict:
    headers = {"X-Visivo-Token": token, "Content-Type": "application/json"}
    if session:
        headers["X-Visivo-Session"] = session
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path: Path):
    port = _free_port()
    token_file = tmp_path / "token"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}
    env.update(VISIVO_TOKEN_FILE=str(token_file), VISIVO_OUTPUT_DIR=str(tmp_path / "out"), VISIVO_BACKEND="auto")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
            if token_file.exists():
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    pass
            time.sleep(0.2)
        else:
            pytest.fail("server did not start in 60 s")
        yield port, token_file.read_text().strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_client_flow_over_http(server: tuple[int, str]) -> None:
    port, token = server
    with pytest.raises(urllib.error.HTTPError) as denied:
        _call(port, "/v1/health", "not-the-token")
    assert denied.value.code == 401
    health = _call(port, "/v1/health", token)
    assert health["ok"] is True and health["backend"] in ("cpu", "gpu")
    listing = _call(port, "/v1/files/list", token)
    names = [entry["name"] for entry in listing["entries"]]
    assert "ngc5921_hi_cube.fits.gz" in names and "3c273_continuum.fits.gz" in names
    cube = _call(port, "/v1/datasets/open", token, {"path": "ngc5921_hi_cube.fits.gz"})
    assert cube["valid"] is True and (cube["width"], cube["height"], cube["depth"]) == (256, 256, 56)
    assert cube["spectral_axis_type"] == "VRAD" and cube["bunit"] == "Jy/beam"
    again = _call(port, f"/v1/sessions/{cube['session_id']}/datasets", token)
    assert again["datasets"][0]["dataset_id"] == cube["dataset_id"]

"""Client: progress bars, Ctrl-C cancelling the server task, token discovery, and clear errors."""

from __future__ import annotations

import pytest

from tests.client.conftest import CUBE, free_port
from visivo_client import Client, VisivoAuthError, VisivoConnectionError, VisivoError
from visivo_client.transport import Transport


def test_progress_bar_on_stderr_and_silence(live_server, capsys) -> None:
    with Client(live_server.url, live_server.token) as loud:
        hdu = loud.open(CUBE).moment(2, channels=(12, 44))
    err = capsys.readouterr().err
    assert "moment 2:" in err and "100%" in err and hdu.data.shape == (256, 256)
    with Client(live_server.url, live_server.token, progress=True) as quiet:
        quiet.open(CUBE).moment(2, channels=(12, 44), progress=False)
    assert capsys.readouterr().err == ""


def test_ctrl_c_cancels_the_task_on_the_server(client: Client, raw_for, monkeypatch) -> None:
    ds = client.open(CUBE)
    raw = raw_for(client)
    seen: dict[str, object] = {}
    real_get = Transport.get

    def interrupted_poll(self, route, params=None):
        if route.startswith("/v1/tasks/task_"):
            seen["task_id"] = route.rsplit("/", 1)[1]
            seen["status"] = real_get(self, route)["status"]
            raise KeyboardInterrupt  # what Ctrl-C raises in the polling loop
        return real_get(self, route, params)

    monkeypatch.setattr(Transport, "get", interrupted_poll)
    with pytest.raises(KeyboardInterrupt):
        ds.linewidth(channels=(3, 52), snr=0.0, progress=False)
    monkeypatch.undo()
    task_id = seen["task_id"]
    assert seen["status"] in ("pending", "running", "done")
    gone = raw.get(f"/v1/tasks/{task_id}")
    assert gone.status_code == 404 and "not found" in gone.json()["error"]
    assert task_id not in [t["task_id"] for t in client.tasks()]
    assert raw.get("/v1/health").json()["running_tasks"] == 0


def test_task_listing_and_cancel_by_id(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    created = raw_for(client).post("/v1/tasks/moment", {"dataset_id": ds.dataset_id, "order": 6})
    listed = {t["task_id"]: t for t in client.tasks()}
    assert listed[created["task_id"]]["operation"] == "moment"
    assert client.task(created["task_id"])["task_id"] == created["task_id"]
    assert client.cancel(created["task_id"]) is True
    assert client.cancel(created["task_id"]) is False
    with pytest.raises(VisivoError) as missing:
        client.task(created["task_id"])
    assert missing.value.status == 404 and "not found" in missing.value.message


def test_wrong_token(live_server) -> None:
    with Client(live_server.url, "not-the-token") as bad, pytest.raises(VisivoAuthError) as denied:
        bad.health()
    assert denied.value.status == 401 and "Invalid token" in str(denied.value) and "VISIVO_TOKEN" in str(denied.value)


def test_token_from_environment_and_files(live_server, monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("VISIVO_TOKEN_FILE", raising=False)
    monkeypatch.setenv("VISIVO_TOKEN", live_server.token)
    with Client(live_server.url) as c:
        assert c.health()["ok"] is True
    monkeypatch.delenv("VISIVO_TOKEN")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".visivo_token").write_text(live_server.token + "\n")
    with Client(live_server.url) as c:
        assert c.health()["ok"] is True
    other = tmp_path / "elsewhere"
    other.write_text("stale")
    monkeypatch.setenv("VISIVO_TOKEN_FILE", str(other))
    with Client(live_server.url) as c, pytest.raises(VisivoAuthError):
        c.health()


def test_missing_file_and_bad_requests(client: Client) -> None:
    with pytest.raises(VisivoError) as missing:
        client.open("no_such_cube.fits")
    assert missing.value.status == 200 and missing.value.message == "File not found."
    with pytest.raises(VisivoError) as js9_missing:
        client.imstat("no_such_image.fits")
    assert js9_missing.value.status == 404 and "Image file not found" in js9_missing.value.message
    ds = client.open(CUBE)
    with pytest.raises(VisivoError) as order:
        ds.moment(7)
    assert "Unsupported moment order 7" in order.value.message
    with pytest.raises(VisivoError) as width:
        ds.pv([(0, 0), (10, 10)], width=0)
    assert width.value.status == 422 and "width_pixels" in width.value.message


def test_server_down() -> None:
    port = free_port()  # nothing listens there
    with Client(f"http://127.0.0.1:{port}", "token") as c, pytest.raises(VisivoConnectionError) as down:
        c.health()
    assert down.value.status is None and f"127.0.0.1:{port}" in str(down.value) and "Cannot reach" in str(down.value)

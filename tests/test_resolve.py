"""Name resolution: pyongc's own coordinates, coordinates in the name, and Sesame through a
loopback stand-in server (found, unknown, unreachable)."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pyongc import ongc

from app.errors import InvalidRequest
from app.main import create_app
from app.services.resolve import parse_coordinates, resolve_target, sesame_urls_from
from app.settings import Settings

TOKEN = "resolve-test-token"
_KNOWN = {"HD 12345": ("%I.0 HD  12345\n%J 30.12345 -12.54321 = 02:00:29.62 -12:32:35.5\n", "HD 12345")}


class _Sesame(BaseHTTPRequestHandler):
    """Answers like CDS Sesame's plain-text output (``-oI``)."""

    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        _Sesame.requests.append(self.path)
        name = urllib.parse.unquote(self.path.split("?", 1)[1]) if "?" in self.path else ""
        known = _KNOWN.get(name)
        body = f"# {name}\n#=Sc=Simbad:    1\n" + (known[0] if known else "#! *** Nothing found *** \n")
        payload = (body + "#====Done====#\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sesame() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sesame)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Sesame.requests.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/cgi-bin/nph-sesame"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sesame)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/sesame"


@pytest.mark.parametrize(("name", "ongc_name"), [("M31", "M31"), ("M 31", "M31"), ("NGC 5921", "NGC5921"),
                                                  ("ngc5921", "NGC5921"), ("Messier 31", "M31"),
                                                  ("UGC 454", "NGC224"), ("Andromeda Galaxy", "NGC224")])
def test_openngc_matches_pyongc(name: str, ongc_name: str) -> None:
    ra, dec = np.degrees(ongc.Dso(ongc_name).rad_coords)
    res = resolve_target(name, sesame_urls=[])
    assert res["resolver"] == "openngc"
    assert res["ra_deg"] == pytest.approx(ra, abs=1e-9) and res["dec_deg"] == pytest.approx(dec, abs=1e-9)
    assert res["resolved_name"] == ("NGC 224" if ongc_name in ("M31", "NGC224") else "NGC 5921")


def test_coordinates_in_the_name() -> None:
    res = resolve_target("2MASX J00424433+4116074", sesame_urls=[])
    assert res["resolver"] == "designation" and not res["approximate"]
    assert res["ra_deg"] == pytest.approx(15 * (0 + 42 / 60 + 44.33 / 3600), abs=1e-9)
    assert res["dec_deg"] == pytest.approx(41 + 16 / 60 + 7.4 / 3600, abs=1e-9)
    sdss = resolve_target("SDSS J123049.42-002328.0", sesame_urls=[])
    assert sdss["dec_deg"] == pytest.approx(-(23 / 60 + 28.0 / 3600), abs=1e-9)
    assert parse_coordinates("12:30:49.42 +12:23:28.0") == pytest.approx((187.70591666666667, 12.391111111111112))
    assert parse_coordinates("12h30m49.42s -00d23m28s") == pytest.approx((187.70591666666667,
                                                                           -(23 / 60 + 28 / 3600)))
    assert parse_coordinates("187.7059, -12.3911") == pytest.approx((187.7059, -12.3911))
    assert parse_coordinates("M31") is None and parse_coordinates("3C 273") is None
    with pytest.raises(InvalidRequest, match="out of range"):
        parse_coordinates("400 12")
    assert resolve_target("10.5 -20.25", sesame_urls=[])["resolver"] == "coordinates"


def test_sesame_stand_in(sesame: str) -> None:
    res = resolve_target("HD 12345", sesame_urls=[sesame])
    assert res["resolver"] == "sesame" and res["resolved_name"] == "HD 12345"
    assert (res["ra_deg"], res["dec_deg"]) == (30.12345, -12.54321)
    assert _Sesame.requests[-1] == "/cgi-bin/nph-sesame/-oI/A?HD%2012345"
    with pytest.raises(InvalidRequest, match="Sesame does not know it"):
        resolve_target("Nobody Knows Me", sesame_urls=[sesame])
    # NGC/Messier names never reach the network
    count = len(_Sesame.requests)
    assert resolve_target("M 31", sesame_urls=[sesame])["resolver"] == "openngc"
    assert len(_Sesame.requests) == count


def test_unreachable_sesame_and_fallbacks(closed_port_url: str, sesame: str) -> None:
    with pytest.raises(InvalidRequest, match="could not be reached"):
        resolve_target("HD 12345", sesame_urls=[closed_port_url], timeout=1.0)
    # the first mirror is down, the second answers
    assert resolve_target("HD 12345", sesame_urls=[closed_port_url, sesame])["resolver"] == "sesame"
    approx = resolve_target("PSR J1939+2134", sesame_urls=[closed_port_url], timeout=1.0)
    assert approx["resolver"] == "designation" and approx["approximate"] is True
    assert approx["ra_deg"] == pytest.approx(15 * (19 + 39 / 60)) and approx["dec_deg"] == pytest.approx(21 + 34 / 60)
    with pytest.raises(InvalidRequest, match="disabled"):
        resolve_target("HD 12345", sesame_urls=sesame_urls_from(""))
    with pytest.raises(InvalidRequest, match="name"):
        resolve_target("  ", sesame_urls=[])


def test_route_uses_configured_sesame(tmp_path: Path, sesame: str) -> None:
    settings = Settings(token=TOKEN, token_file=tmp_path / "token", output_dir=tmp_path / "out", backend="cpu",
                        workers=2, sesame_url=sesame)
    with TestClient(create_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        res = client.post("/v1/resolve/target", json={"name": "HD 12345"}).json()
        assert res["valid"] and res["resolver"] == "sesame" and res["ra_deg"] == 30.12345
        m31 = client.post("/v1/resolve/target", json={"name": "M31"}).json()
        assert m31["valid"] and m31["resolved_name"] == "NGC 224" and "M 31" in m31["aliases"]
        unknown = client.post("/v1/resolve/target", json={"name": "Nobody Knows Me"}).json()
        assert unknown["valid"] is False and "Nobody Knows Me" in unknown["error"]

"""HiPS routes: a survey built offline from the 3C 273 image, served locally and by a loopback HTTP server."""

from __future__ import annotations

import functools
import io
import math
import shutil
import socket
import threading
import warnings
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import ICRS, Galactic, SkyCoord
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS, FITSFixedWarning
from astropy_healpix import HEALPix
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from app.auth import require_token
from app.main import create_app
from app.routers import hips as hips_router
from app.settings import DEMO_DATA_ROOT, Settings
from tests.api.conftest import TOKEN

RA_3C273, DEC_3C273 = 187.2779245833, 2.052384027778
LEVEL = 6
TILE = 64


# -- fixtures ---------------------------------------------------------------------------------
def wired_app(settings: Settings) -> FastAPI:
    """The app with the HiPS router included (as app.main will include it) unless it already is."""
    app = create_app(settings)
    paths = {getattr(r, "path", "") for r in app.routes}
    if "/v1/hips/open" not in paths:
        app.include_router(hips_router.router, dependencies=[Depends(require_token)])
    return app


@pytest.fixture
def hips_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # the "remote" survey is on loopback
    with TestClient(wired_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        yield client


def _to_png(fits_path: Path, lo: float, hi: float) -> None:
    """Write the PNG twin of a FITS tile: linear grey between the cuts, blank → transparent, rows flipped."""
    data = fits.getdata(fits_path)
    scaled = np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0, 1)
    grey = (scaled * 255).astype(np.uint8)
    alpha = np.where(np.isfinite(data), 255, 0).astype(np.uint8)
    rgba = np.dstack([grey, grey, grey, alpha])[::-1]
    Image.fromarray(rgba, "RGBA").save(fits_path.with_suffix(".png"))


def build_survey(dest: Path, frame: str) -> Path:
    """A small HiPS of the 3C 273 image (reproject, FITS tiles) plus PNG tiles; formats ``png fits``."""
    from reproject import reproject_interp
    from reproject.hips import reproject_to_hips

    data, header = fits.getdata(DEMO_DATA_ROOT / "3c273_continuum.fits.gz", header=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)  # DATE-OBS → MJD-OBS fix-up of the CASA header
        wcs = WCS(header)
    reproject_to_hips((data, wcs), coord_system_out=frame, reproject_function=reproject_interp,
                      output_directory=dest, level=LEVEL, tile_size=TILE)
    props = dest / "properties"
    text = props.read_text()
    cut = next(line for line in text.splitlines() if line.startswith("hips_pixel_cut"))
    lo, hi = (float(v) for v in cut.split("=")[1].split())
    for tile in dest.glob("Norder*/Dir*/Npix*.fits"):
        _to_png(tile, lo, hi)
    props.write_text(text.replace("hips_tile_format     = fits", "hips_tile_format     = png fits"))
    return dest


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hips")
    return {frame: build_survey(base / frame, frame) for frame in ("equatorial", "galactic")}


@pytest.fixture
def survey_dir(built: dict[str, Path], data_dir: Path) -> Path:
    return Path(shutil.copytree(built["equatorial"], data_dir / "hips3c273"))


@pytest.fixture
def remote_survey(built: dict[str, Path], tmp_path: Path) -> Iterator[tuple[str, list[str], Path]]:
    """The survey, with an Allsky.png, served by a loopback HTTP server; yields (root URL, request log, dir)."""
    site = tmp_path / "site"
    root = Path(shutil.copytree(built["equatorial"], site / "survey"))
    Image.new("RGBA", (27 * 8, 29 * 8), (10, 20, 30, 255)).save(root / "Norder3" / "Allsky.png")
    log: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            log.append(self.path)
            if self.path.startswith("/redirect-to-file"):
                self.send_response(302)
                self.send_header("Location", "file:///etc/passwd")
                self.end_headers()
                return
            super().do_GET()

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/survey", log, root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _open(client: TestClient, url: str) -> dict:
    body = client.post("/v1/hips/open", json={"url": url}).json()
    assert body["valid"], body
    return body


def _order_pix(order: int, frame=None) -> int:
    hp = HEALPix(nside=2**order, order="nested", frame=frame if frame is not None else ICRS())
    return int(hp.skycoord_to_healpix(SkyCoord(RA_3C273 * u.deg, DEC_3C273 * u.deg)))


# -- open -------------------------------------------------------------------------------------
def test_open_local_directory_and_file_url(hips_client: TestClient, survey_dir: Path) -> None:
    body = _open(hips_client, str(survey_dir))
    assert body["survey_id"].startswith("hips_") and body["remote"] is False
    assert (body["order_min"], body["order_max"], body["frame"]) == (0, LEVEL, "equatorial")
    assert body["tile_format"] == "png" and body["tile_formats"] == ["png", "fits"] and body["tile_width"] == TILE
    assert body["ra_center"] == pytest.approx(RA_3C273, abs=1e-3)
    assert body["dec_center"] == pytest.approx(DEC_3C273, abs=1e-3)
    assert 0 < body["fov"] < 0.1
    assert _open(hips_client, survey_dir.as_uri())["survey_id"] == body["survey_id"]


def test_open_refusals(hips_client: TestClient, survey_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(survey_dir, outside)
    assert hips_client.post("/v1/hips/open", json={"url": str(outside)}).json()["error"] == "Directory not found."
    empty = data_dir / "empty"
    empty.mkdir()
    res = hips_client.post("/v1/hips/open", json={"url": str(empty)}).json()
    assert res["valid"] is False and "no properties" in res["error"]
    bad = data_dir / "bad"
    bad.mkdir()
    (bad / "properties").write_text("obs_title = nothing\nhips_frame = equatorial\n")
    res = hips_client.post("/v1/hips/open", json={"url": str(bad)}).json()
    assert res["valid"] is False and "hips_order" in res["error"]
    res = hips_client.post("/v1/hips/open", json={"url": "ftp://127.0.0.1/x"}).json()
    assert res["valid"] is False and "scheme" in res["error"]
    assert hips_client.get("/v1/hips/hips_000000000000/tile/3/0").status_code == 404


# -- tiles and Allsky (local) -------------------------------------------------------------------
def test_local_tiles(hips_client: TestClient, survey_dir: Path) -> None:
    sid = _open(hips_client, str(survey_dir))["survey_id"]
    pix = _order_pix(LEVEL)
    rel = f"Norder{LEVEL}/Dir{(pix // 10000) * 10000}/Npix{pix}"
    res = hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{pix}")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert res.content == (survey_dir / f"{rel}.png").read_bytes()
    res = hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{pix}", params={"format": "fits"})
    assert res.headers["content-type"] == "application/fits"
    assert res.content == (survey_dir / f"{rel}.fits").read_bytes()
    assert hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{(pix + 7) % (12 * 4**LEVEL)}").status_code == 404
    for bad in (f"{LEVEL + 1}/0", f"{LEVEL}/{12 * 4**LEVEL}", "-1/0"):
        assert hips_client.get(f"/v1/hips/{sid}/tile/{bad}").status_code == 422, bad
    assert hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{pix}", params={"format": "jpeg"}).status_code == 422


def test_allsky_built_from_order3_tiles(hips_client: TestClient, survey_dir: Path) -> None:
    sid = _open(hips_client, str(survey_dir))["survey_id"]
    pix = _order_pix(3)
    row, col = divmod(pix, 27)
    res = hips_client.get(f"/v1/hips/{sid}/allsky", params={"order": 3})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert res.headers["x-visivo-allsky-built"] == "1" and res.headers["x-visivo-allsky-columns"] == "27"
    mosaic = np.asarray(Image.open(io.BytesIO(res.content)))
    assert mosaic.shape == (29 * TILE, 27 * TILE, 4)
    tile_png = np.asarray(Image.open(survey_dir / f"Norder3/Dir0/Npix{pix}.png"))
    block = (slice(row * TILE, (row + 1) * TILE), slice(col * TILE, (col + 1) * TILE))
    np.testing.assert_array_equal(mosaic[block], tile_png)
    rest = mosaic[..., 3].copy()
    rest[block] = 0
    assert not rest.any()  # every other tile is missing: transparent

    res = hips_client.get(f"/v1/hips/{sid}/allsky", params={"order": 3, "format": "fits"})
    assert res.headers["content-type"] == "application/fits"
    allsky_fits = fits.getdata(io.BytesIO(res.content))
    tile_fits = fits.getdata(survey_dir / f"Norder3/Dir0/Npix{pix}.fits")
    rows = 29 * TILE
    fits_block = allsky_fits[rows - (row + 1) * TILE: rows - row * TILE, col * TILE:(col + 1) * TILE]
    np.testing.assert_array_equal(fits_block, tile_fits)  # FITS Allsky is bottom-up, like its tiles
    assert hips_client.get(f"/v1/hips/{sid}/allsky", params={"order": LEVEL + 1}).status_code == 422


# -- remote survey on loopback ------------------------------------------------------------------
def test_remote_survey_cached(hips_client: TestClient, remote_survey, settings: Settings) -> None:
    url, log, root = remote_survey
    body = _open(hips_client, url + "/")
    assert body["remote"] is True and body["url"] == url and body["order_max"] == LEVEL
    sid = body["survey_id"]
    pix = _order_pix(LEVEL)
    rel = f"Norder{LEVEL}/Dir{(pix // 10000) * 10000}/Npix{pix}.png"
    first = hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{pix}")
    second = hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{pix}")
    assert first.content == second.content == (root / rel).read_bytes()
    assert log.count(f"/survey/{rel}") == 1  # fetched once, then served from the disk cache
    cached = settings.output_dir / ".hips_cache" / sid / rel
    assert cached.read_bytes() == first.content

    missing = (pix + 7) % (12 * 4**LEVEL)
    for _ in range(2):
        assert hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{missing}").status_code == 404
    assert sum(p.endswith(f"/Npix{missing}.png") for p in log) == 1  # the 404 is remembered too

    res = hips_client.get(f"/v1/hips/{sid}/allsky")
    assert res.headers["x-visivo-allsky-built"] == "0"
    assert res.content == (root / "Norder3" / "Allsky.png").read_bytes()

    built = hips_client.get(f"/v1/hips/{sid}/allsky", params={"order": 1})  # no Allsky at order 1: built
    assert built.status_code == 200 and built.headers["x-visivo-allsky-built"] == "1"
    assert Image.open(io.BytesIO(built.content)).size == (6 * TILE, 8 * TILE)  # 48 tiles, 6 across


def test_remote_failures(hips_client: TestClient, remote_survey) -> None:
    url, _, root = remote_survey
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    res = hips_client.post("/v1/hips/open", json={"url": f"http://127.0.0.1:{closed_port}/hips"}).json()
    assert res["valid"] is False and "unreachable" in res["error"]
    res = hips_client.post("/v1/hips/open", json={"url": url.replace("/survey", "/nothing")}).json()
    assert res["valid"] is False and "Not found" in res["error"]
    res = hips_client.post("/v1/hips/open", json={"url": url.replace("/survey", "/redirect-to-file")}).json()
    assert res["valid"] is False and "Only http and https" in res["error"]

    sid = _open(hips_client, url)["survey_id"]
    pix = _order_pix(LEVEL)
    (root / f"Norder{LEVEL}/Dir{(pix // 10000) * 10000}/Npix{pix}.png").write_bytes(b"<html>oops</html>")
    res = hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{pix}")
    assert res.status_code == 502 and "not a .png" in res.json()["error"]


# -- viewport covers ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fov", "width", "expected_order"),
    [(30.0, 512, 4), (180.0, 1000, 3), (360.0, 256, 1), (5.0, 1000, 6), (40.0, 8000, 6)],
)
def test_query_tiles_order_and_cover(hips_client: TestClient, survey_dir: Path, fov: float, width: int,
                                     expected_order: int) -> None:
    sid = _open(hips_client, str(survey_dir))["survey_id"]
    res = hips_client.post(f"/v1/hips/{sid}/query_tiles",
                           json={"ra": RA_3C273, "dec": DEC_3C273, "fov_deg": fov, "width": width, "height": width})
    body = res.json()
    assert body["valid"], body
    # Aladin Lite: tile angle = 3600·tile_width·fov/width arcsec; nside = next power of two of sqrt(4π/12)/angle
    tile_deg = TILE * fov / width
    nside = 2 ** math.ceil(math.log2(max(1.0, math.degrees(math.sqrt(4 * math.pi / 12)) / tile_deg)))
    order = max(1, int(math.log2(nside)))
    order = 3 if fov <= 50 and order <= 2 else order
    assert expected_order == min(order, LEVEL) == body["order"]

    radius = fov / 2 * math.sqrt(2)
    hp = HEALPix(nside=2 ** body["order"], order="nested", frame=ICRS())
    if radius >= 180:
        expected = np.arange(12 * 4 ** body["order"])
    else:
        expected = np.sort(hp.cone_search_skycoord(SkyCoord(RA_3C273 * u.deg, DEC_3C273 * u.deg), radius * u.deg))
    assert body["pixels"] == expected.tolist() and body["n_tiles"] == len(expected)
    assert body["radius_deg"] == pytest.approx(radius)
    tiles = body["tiles"][:50]
    pix = np.array([t["pix"] for t in tiles])
    centres = hp.healpix_to_skycoord(pix)
    corners = hp.boundaries_skycoord(pix, step=1)
    np.testing.assert_allclose([[t["ra"], t["dec"]] for t in tiles],
                               np.column_stack([centres.ra.deg, centres.dec.deg]), atol=1e-9)
    np.testing.assert_allclose([t["corners"] for t in tiles],
                               np.stack([corners.ra.deg, corners.dec.deg], axis=-1), atol=1e-9)
    assert tiles[0]["url"] == f"/v1/hips/{sid}/tile/{body['order']}/{tiles[0]['pix']}"


def test_query_tiles_explicit_order_radius_and_limits(hips_client: TestClient, survey_dir: Path) -> None:
    sid = _open(hips_client, str(survey_dir))["survey_id"]
    body = hips_client.post(f"/v1/hips/{sid}/query_tiles", json={"ra_deg": 10.0, "dec_deg": -80.0, "fov_deg": 3.0,
                                                                "radius_deg": 2.5, "order": 5}).json()
    hp = HEALPix(nside=32, order="nested", frame=ICRS())
    expected = np.sort(hp.cone_search_skycoord(SkyCoord(10 * u.deg, -80 * u.deg), 2.5 * u.deg))
    assert body["order"] == 5 and body["pixels"] == expected.tolist()
    whole = hips_client.post(f"/v1/hips/{sid}/query_tiles", json={"ra": 0, "dec": 0, "fov_deg": 360, "order": 2})
    assert whole.json()["pixels"] == list(range(192))
    too_many = hips_client.post(f"/v1/hips/{sid}/query_tiles", json={"ra": 0, "dec": 0, "fov_deg": 360, "order": 6})
    assert too_many.json()["valid"] is False and "tiles" in too_many.json()["error"]
    beyond = hips_client.post(f"/v1/hips/{sid}/query_tiles", json={"ra": 0, "dec": 0, "fov_deg": 1, "order": 7})
    assert beyond.json()["valid"] is False
    assert hips_client.post(f"/v1/hips/{sid}/query_tiles", json={"ra": 0, "fov_deg": 1}).status_code == 422


def test_galactic_survey(hips_client: TestClient, built: dict[str, Path], data_dir: Path) -> None:
    survey = shutil.copytree(built["galactic"], data_dir / "hips_gal")
    body = _open(hips_client, str(survey))
    assert body["frame"] == "galactic"
    sid = body["survey_id"]
    res = hips_client.post(f"/v1/hips/{sid}/query_tiles",
                           json={"ra": RA_3C273, "dec": DEC_3C273, "fov_deg": 2.0, "order": LEVEL}).json()
    centre = SkyCoord(RA_3C273 * u.deg, DEC_3C273 * u.deg)
    hp = HEALPix(nside=2**LEVEL, order="nested", frame=Galactic())
    expected = np.sort(hp.cone_search_skycoord(centre, math.sqrt(2) * u.deg))
    assert res["pixels"] == expected.tolist()
    gal_pix = _order_pix(LEVEL, Galactic())
    assert gal_pix in res["pixels"] and _order_pix(LEVEL) != gal_pix
    tile = res["tiles"][res["pixels"].index(gal_pix)]
    expected_centre = hp.healpix_to_skycoord([gal_pix]).icrs
    assert tile["ra"] == pytest.approx(expected_centre.ra.deg[0]) and tile["dec"] == pytest.approx(
        expected_centre.dec.deg[0])
    assert SkyCoord(tile["ra"] * u.deg, tile["dec"] * u.deg).separation(centre).deg < 1.0
    png = hips_client.get(f"/v1/hips/{sid}/tile/{LEVEL}/{gal_pix}")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"


# -- catalogue overlay --------------------------------------------------------------------------
def _expected_names(path: Path, ra: float, dec: float, radius: float) -> list[str]:
    table = Table.read(path, format="ascii.csv")
    sep = SkyCoord(table["ra"], table["dec"], unit="deg").separation(SkyCoord(ra * u.deg, dec * u.deg)).deg
    order = np.argsort(sep, kind="stable")
    return [str(table["name"][i]) for i in order if sep[i] <= radius]


def test_catalogue_overlay_from_path(hips_client: TestClient) -> None:
    demo = DEMO_DATA_ROOT / "catalogue_sky.csv"
    expected = _expected_names(demo, 230.5, 5.0, 0.5)
    assert len(expected) > 5
    res = hips_client.post("/v1/hips/catalogue_overlay",
                           json={"path": "catalogue_sky.csv", "ra": 230.5, "dec": 5.0, "radius_deg": 0.5}).json()
    assert res["valid"] and res["truncated"] is False and res["ra_column"] == "ra"
    assert [s["name"] for s in res["sources"]] == expected
    first = res["sources"][0]
    assert set(first) >= {"ra_deg", "dec_deg", "name", "redshift", "flux_mjy", "morphology", "separation_deg"}
    capped = hips_client.post("/v1/hips/catalogue_overlay", json={"path": str(demo), "ra_deg": 230.5,
                                                                 "dec_deg": 5.0, "radius_deg": 0.5,
                                                                 "max_rows": 3}).json()
    assert capped["truncated"] is True and capped["n_sources"] == 3
    assert capped["total_in_field"] == len(expected) and [s["name"] for s in capped["sources"]] == expected[:3]
    by_fov = hips_client.post("/v1/hips/catalogue_overlay", json={"path": str(demo), "ra": 230.5, "dec": 5.0,
                                                                 "fov_deg": 0.5 * math.sqrt(2)}).json()
    assert by_fov["radius_deg"] == pytest.approx(0.5) and by_fov["n_sources"] == len(expected)


def test_catalogue_overlay_formats_and_refusals(hips_client: TestClient, data_dir: Path, tmp_path: Path) -> None:
    table = Table({"Source_ID": ["a", "b", "c"], "RA_DEG": [10.0, 10.1, 50.0], "DEC_DEG": [-5.0, -5.05, 0.0]})
    table.write(data_dir / "upper.tsv", format="ascii.tab")
    table.write(data_dir / "upper.vot", format="votable")
    for name in ("upper.tsv", "upper.vot"):
        res = hips_client.post("/v1/hips/catalogue_overlay",
                               json={"path": str(data_dir / name), "ra": 10.0, "dec": -5.0, "radius_deg": 1}).json()
        assert res["valid"], (name, res)
        assert [s["name"] for s in res["sources"]] == ["a", "b"] and res["dec_column"] == "DEC_DEG"
    Table({"x": [1.0], "y": [2.0]}).write(data_dir / "nocoords.csv", format="ascii.csv")
    res = hips_client.post("/v1/hips/catalogue_overlay",
                           json={"path": str(data_dir / "nocoords.csv"), "ra": 0, "dec": 0, "radius_deg": 1}).json()
    assert res["valid"] is False and "RA/Dec" in res["error"]
    table.write(tmp_path / "outside.csv", format="ascii.csv")
    res = hips_client.post("/v1/hips/catalogue_overlay",
                           json={"path": str(tmp_path / "outside.csv"), "ra": 0, "dec": 0, "radius_deg": 1}).json()
    assert res == {"valid": False, "error": "File not found."}
    res = hips_client.post("/v1/hips/catalogue_overlay", json={"ra": 0, "dec": 0, "radius_deg": 1}).json()
    assert res["valid"] is False


def test_catalogue_overlay_from_open_dataset(hips_client: TestClient) -> None:
    if "/v1/catalogue/open" not in {getattr(r, "path", "") for r in hips_client.app.routes}:
        operations = pytest.importorskip("app.operations.http", reason="the catalogue service is not there yet")
        hips_client.app.include_router(operations.build_router(), dependencies=[Depends(require_token)])
    opened = hips_client.post("/v1/catalogue/open", json={"path": "catalogue_sky.csv"}).json()
    assert opened["valid"], opened
    headers = {"X-Visivo-Session": opened["session_id"]}
    res = hips_client.post("/v1/hips/catalogue_overlay", headers=headers,
                           json={"dataset_id": opened["dataset_id"], "ra": 230.5, "dec": 5.0, "radius_deg": 0.5})
    assert res.json()["valid"], res.json()
    assert [s["name"] for s in res.json()["sources"]] == _expected_names(DEMO_DATA_ROOT / "catalogue_sky.csv",
                                                                        230.5, 5.0, 0.5)
    other = hips_client.post("/v1/hips/catalogue_overlay", headers={"X-Visivo-Session": "someone-else"},
                             json={"dataset_id": opened["dataset_id"], "ra": 230.5, "dec": 5.0, "radius_deg": 0.5})
    assert other.status_code == 404


def test_disk_cache_is_bounded_lru(tmp_path: Path) -> None:
    from app.services.hips.tiles import DiskCache

    cache = DiskCache(tmp_path / "cache", max_bytes=250)
    cache.put("s/a", b"a" * 100)
    cache.put("s/b", b"b" * 100)
    assert cache.get("s/a") == b"a" * 100  # a is now the most recent
    cache.put("s/c", b"c" * 100)
    assert cache.get("s/b") is None and not (tmp_path / "cache/s/b").exists()
    assert cache.total_bytes == 200
    cache.put("s/huge", b"h" * 300)  # larger than the whole cache: not kept
    assert cache.get("s/huge") is None
    reopened = DiskCache(tmp_path / "cache", max_bytes=150)  # files left by a previous run are adopted and bounded
    assert reopened.total_bytes == 100

"""Regions for noise and statistics (issue 17 item 6): per-region noise in POST /v1/cube/noise, CASA imstat
keys in POST /v1/cube/region_stats, region files by path; masks from astropy-regions, numbers from numpy."""

from __future__ import annotations

import math
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from fastapi.testclient import TestClient
from regions import CirclePixelRegion, EllipsePixelRegion, PixCoord, PolygonPixelRegion

from app.settings import Settings
from tests.api.conftest import open_dataset, write_cube

NZ, NY, NX = 10, 22, 26
TEXT = ("# Region file format: DS9\nimage\ncircle(10,9,3.5)\nellipse(18,12,5,3,30)\n"
        "polygon(3,15,9,21,12,16,6,13)\n")
#: The same regions 0-based, built with astropy-regions directly.
REFS = [CirclePixelRegion(PixCoord(9, 8), 3.5),
        EllipsePixelRegion(PixCoord(17, 11), width=10, height=6, angle=30 * u.deg),
        PolygonPixelRegion(PixCoord([2, 8, 11, 5], [14, 20, 15, 12]))]


@pytest.fixture
def cube(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray]:
    rng = np.random.default_rng(17)
    data = rng.normal(0.0, 1.0, (NZ, NY, NX)).astype(np.float32)
    data *= np.linspace(0.5, 2.0, NZ, dtype=np.float32)[:, None, None]  # σ changes with channel
    data[2, 8, 9] = np.nan
    data[:, 12:14, 16:18] = np.nan
    data[4, 9, 10] = 25.0  # the maximum, inside the circle
    data[4, 7, 8] = 25.0  # a tie earlier in C order: maxpos keeps this one
    path = write_cube(data_dir / "regstats.fits", data)
    body = open_dataset(client, path)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, data


def _mask(ref) -> np.ndarray:  # noqa: ANN001
    return ref.to_mask(mode="center").to_image((NY, NX)).astype(bool)


def _median(x: np.ndarray) -> float:
    s = np.sort(x)
    n = s.size
    return float(s[(n - 1) // 2]) if n % 2 else 0.5 * (float(s[n // 2 - 1]) + float(s[n // 2]))


def test_noise_per_region_against_numpy(client, cube) -> None:  # noqa: ANN001
    ds, headers, data = cube
    body = client.post("/v1/cube/noise", json={"dataset_id": ds, "regions": TEXT, "channel_start": 1,
                                               "channel_end": 8}, headers=headers).json()
    assert body["valid"], body
    assert body["num_channels"] == 8 and len(body["regions"]) == 3
    masks = [_mask(r) for r in REFS]
    for entry, mask in zip(body["regions"], masks, strict=True):
        assert entry["num_pixels"] == int(mask.sum())
        values = data[1:9][:, mask].astype(np.float64)
        for z, row in enumerate(values):
            row = row[np.isfinite(row)]
            med = np.median(row)
            mad = np.median(np.abs(row - med))
            assert entry["count"][z] == row.size
            assert entry["median"][z] == pytest.approx(med, rel=1e-12, abs=1e-12)
            assert entry["mad"][z] == pytest.approx(mad, rel=1e-12)
            assert entry["sigma"][z] == pytest.approx(1.4826 * mad, rel=1e-4)
        blanks = np.count_nonzero(~np.isfinite(values))
        assert entry["blank_fraction"] == pytest.approx(blanks / values.size)
    # the ellipse holds the blank square: its fraction is not zero
    assert body["regions"][1]["blank_fraction"] > 0
    # top level: the union of the regions
    union = np.logical_or.reduce(masks)
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    assert body["region"] == {"x0": cols[0], "x1": cols[-1], "y0": rows[0], "y1": rows[-1]}
    for z in range(8):
        row = data[1 + z][union].astype(np.float64)
        row = row[np.isfinite(row)]
        assert body["mad"][z] == pytest.approx(np.median(np.abs(row - np.median(row))), rel=1e-12)
    # σ grows with the channel scale, as the cube was built
    assert body["regions"][0]["sigma"][-1] > body["regions"][0]["sigma"][0]


def test_noise_box_answer_unchanged_without_regions(client, cube) -> None:  # noqa: ANN001
    ds, headers, data = cube
    body = client.post("/v1/cube/noise", json={"dataset_id": ds, "x0": 2, "x1": 9, "y0": 3, "y1": 7},
                       headers=headers).json()
    assert body["valid"] and "regions" not in body
    row = data[0, 3:8, 2:10].astype(np.float64).ravel()
    assert body["mad"][0] == pytest.approx(np.median(np.abs(row - np.median(row))), rel=1e-12)


def test_region_stats_against_numpy(client, cube) -> None:  # noqa: ANN001
    ds, headers, data = cube
    body = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "regions": TEXT, "channel_start": 2,
                                                      "channel_end": 7}, headers=headers).json()
    assert body["valid"], body
    assert body["num_channels"] == 6 and body["bunit"] == "Jy/beam"
    assert [r["shape"] for r in body["regions"]] == ["circle", "ellipse", "polygon"]
    for entry, ref in zip(body["regions"], REFS, strict=True):
        mask = _mask(ref)
        sub = np.where(mask[None], data[2:8], np.nan)  # (z, y, x), outside the region blank
        x = sub[np.isfinite(sub)].astype(np.float64)
        n = x.size
        assert entry["num_pixels"] == int(mask.sum()) and entry["npts"] == n
        assert entry["sum"] == pytest.approx(x.sum(), rel=1e-10)
        assert entry["sumsq"] == pytest.approx((x * x).sum(), rel=1e-10)
        assert entry["mean"] == pytest.approx(x.mean(), rel=1e-10)
        assert entry["sigma"] == pytest.approx(x.std(ddof=1), rel=1e-9)
        assert entry["rms"] == pytest.approx(math.sqrt((x * x).mean()), rel=1e-10)
        assert entry["min"] == x.min() and entry["max"] == x.max()
        s = np.sort(x)
        assert entry["median"] == _median(x)
        assert entry["q1"] == s[math.ceil(n / 4) - 1] and entry["q3"] == s[math.ceil(3 * n / 4) - 1]
        assert entry["quartile"] == pytest.approx(entry["q3"] - entry["q1"])
        assert entry["medabsdevmed"] == pytest.approx(_median(np.abs(x - _median(x))), rel=1e-12)
        filled = np.where(np.isfinite(sub), sub, np.inf)
        z, y, xx = np.unravel_index(int(np.argmin(filled)), sub.shape)  # first minimum in C order
        assert entry["minpos"] == [int(xx), int(y), int(z) + 2]
    # the tie of two 25.0 in the circle: the first in (channel, y, x) order
    assert body["regions"][0]["max"] == 25.0 and body["regions"][0]["maxpos"] == [8, 7, 4]


def test_region_stats_chunked_equals_whole(tmp_path: Path, data_dir: Path, settings: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from app.main import create_app
    from app.services import region_stats
    from tests.api.conftest import TOKEN

    data = np.random.default_rng(3).normal(size=(64, 128, 128)).astype(np.float32)
    path = write_cube(data_dir / "big.fits", data)
    blocks: list[int] = []
    original = region_stats.channel_blocks
    monkeypatch.setattr(region_stats, "channel_blocks", lambda *a: blocks.append(len(out := original(*a))) or out)
    answers = []
    for megabytes in (64, 1):  # 1 MiB: several channel blocks, partials combined
        with TestClient(create_app(settings.model_copy(update={"chunk_megabytes": megabytes}))) as c:
            c.headers.update({"X-Visivo-Token": TOKEN})
            opened = open_dataset(c, path)
            answers.append(c.post("/v1/cube/region_stats", json={
                "dataset_id": opened["dataset_id"], "regions": "image\ncircle(64,64,60)\nbox(10,50,12,20,0)"},
                headers={"X-Visivo-Session": opened["session_id"]}).json())
    whole, chunked = answers
    assert blocks[0] == 1 and blocks[1] > 4
    assert whole["valid"] and chunked["valid"]
    for a, b in zip(whole["regions"], chunked["regions"], strict=True):
        for key in ("npts", "min", "max", "median", "q1", "q3", "medabsdevmed", "minpos", "maxpos"):
            assert a[key] == b[key], key
        for key in ("sum", "sumsq", "mean", "sigma", "rms"):
            assert a[key] == pytest.approx(b[key], rel=1e-12), key


def test_region_file_by_path_and_confined(client, cube, data_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ds, headers, data = cube
    (data_dir / "two.reg").write_text(TEXT)
    by_file = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "region_file": str(data_dir / "two.reg")},
                          headers=headers).json()
    by_text = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "regions": TEXT}, headers=headers).json()
    assert by_file["valid"] and by_file["regions"] == by_text["regions"]
    spectrum = client.post("/v1/cube/region_spectrum", headers=headers,
                           json={"dataset_id": ds, "region_file": str(data_dir / "two.reg")}).json()
    mask = _mask(REFS[0])
    np.testing.assert_allclose(spectrum["spectra"][0]["sum"],
                               np.nansum(np.where(mask[None], data, np.nan).astype(np.float64), axis=(1, 2)),
                               rtol=1e-6)
    noise = client.post("/v1/cube/noise", json={"dataset_id": ds, "region_file": str(data_dir / "two.reg")},
                        headers=headers).json()
    assert noise["valid"] and len(noise["regions"]) == 3
    outside = tmp_path / "outside.reg"
    outside.write_text(TEXT)
    for name in (str(outside), str(data_dir / ".." / "outside.reg"), str(data_dir / "missing.reg")):
        answer = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "region_file": name},
                             headers=headers).json()
        assert answer["valid"] is False and "not found" in answer["error"].lower(), answer
    (data_dir / "binary.reg").write_bytes(b"\xff\xfe\x00circle")
    answer = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "region_file": str(data_dir / "binary.reg")},
                         headers=headers).json()
    assert answer["valid"] is False and "UTF-8" in answer["error"]


@pytest.mark.parametrize(("route", "extra", "message"), [
    ("/v1/cube/region_stats", {"regions": "image\ncircle(500,500,3)"}, "covers no pixel"),
    ("/v1/cube/region_stats", {"regions": "image\npoint(5,5)"}, "no area"),
    ("/v1/cube/region_stats", {"regions": "nonsense"}, "unable to parse line"),
    ("/v1/cube/region_stats", {}, "at least one"),
    ("/v1/cube/region_stats", {"regions": TEXT, "region_file": "x.reg"}, "not both"),
    ("/v1/cube/region_stats", {"regions": TEXT, "format": "fits"}, "format must be"),
    ("/v1/cube/region_stats", {"regions": TEXT, "channel_start": 5, "channel_end": 2}, "Invalid channel range"),
    ("/v1/cube/noise", {"regions": TEXT, "x0": 3}, "not both"),
    ("/v1/cube/noise", {"regions": "image\ncircle(500,500,3)"}, "covers no pixel"),
    ("/v1/cube/noise", {"regions": "#CRTF\ncircle [[230.5deg, 5deg], 40arcsec]"}, "no 'coord='"),
])
def test_bad_regions_are_clear_errors(client, cube, route, extra, message) -> None:  # noqa: ANN001
    ds, headers, _ = cube
    response = client.post(route, json={"dataset_id": ds, **extra}, headers=headers)
    assert response.status_code == 200 and response.json()["valid"] is False, response.text
    assert message in response.json()["error"], response.json()


def test_sky_regions_equal_their_pixel_twins(client, cube, data_dir: Path) -> None:  # noqa: ANN001
    """DS9 fk5 and CRTF J2000 regions go through the WCS: the same pixels and numbers as the pixel regions."""
    from astropy.io import fits
    from astropy.wcs import WCS

    ds, headers, _ = cube
    wcs = WCS(fits.getheader(data_dir / "regstats.fits")).celestial
    ra, dec = wcs.pixel_to_world_values(9.0, 8.0)
    radius = 3.5 * 0.004 * 3600  # arcsec (|CDELT| = 0.004 deg)
    sky_ds9 = f'fk5\ncircle({ra:.8f},{dec:.8f},{radius:.6f}")'
    sky_crtf = f"#CRTF\ncircle [[{ra:.8f}deg, {dec:.8f}deg], {radius:.6f}arcsec], coord=J2000"
    pixel = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "regions": "image\ncircle(10,9,3.5)"},
                        headers=headers).json()["regions"][0]
    for text in (sky_ds9, sky_crtf):
        body = client.post("/v1/cube/region_stats", json={"dataset_id": ds, "regions": text}, headers=headers).json()
        assert body["valid"], body
        sky = body["regions"][0]
        assert sky["num_pixels"] == pixel["num_pixels"] == int(_mask(REFS[0]).sum())
        assert sky["mean"] == pytest.approx(pixel["mean"], rel=1e-12) and sky["npts"] == pixel["npts"]

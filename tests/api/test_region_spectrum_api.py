"""POST /v1/cube/region_spectrum (issue 17 item 4): DS9/CRTF regions, masks against astropy-regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fastapi.testclient import TestClient
from regions import CirclePixelRegion, PixCoord, RectanglePixelRegion

from tests.api.conftest import open_dataset, write_cube

NZ, NY, NX = 12, 20, 24
V0, DV = 50.0, 2.0  # km/s


@pytest.fixture
def cube(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray, Path]:
    rng = np.random.default_rng(4)
    data = rng.normal(1.0, 0.5, (NZ, NY, NX)).astype(np.float32)
    data[3, 8, 9] = np.nan
    data[:, 16:, :] = np.nan  # blank strip
    path = write_cube(data_dir / "reg.fits", data, crval3=V0 * 1e3, cdelt3=DV * 1e3)
    body = open_dataset(client, path)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, data, path


def _post(client: TestClient, headers: dict, **req) -> dict:
    return client.post("/v1/cube/region_spectrum", json=req, headers=headers).json()


def _expected(data: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = data[:, mask].astype(np.float64)
    fin = np.isfinite(x)
    s = np.where(fin, x, 0.0).sum(axis=1)
    n = fin.sum(axis=1)
    return s, n, s / np.maximum(n, 1)


def test_ds9_image_regions_against_astropy_regions_masks(client, cube) -> None:  # noqa: ANN001
    ds, headers, data, _ = cube
    text = "# Region file format: DS9\nimage\ncircle(10,9,3.5)\nbox(18,6,6,4,0)\ncircle(12,16,4)\n"
    body = _post(client, headers, dataset_id=ds, regions=text, channel_start=2, channel_end=9)
    assert body["valid"], body
    assert body["num_channels"] == 8 and body["spectral_axis_unit"] == "km/s"
    np.testing.assert_allclose(body["spectral_values"], V0 + DV * np.arange(2, 10))
    # DS9 image coordinates are 1-based: the same regions 0-based through astropy-regions directly
    refs = [CirclePixelRegion(PixCoord(9, 8), 3.5), RectanglePixelRegion(PixCoord(17, 5), 6, 4),
            CirclePixelRegion(PixCoord(11, 15), 4)]
    assert [s["shape"] for s in body["spectra"]] == ["circle", "rectangle", "circle"]
    for spec, ref in zip(body["spectra"], refs, strict=True):
        mask = ref.to_mask(mode="center").to_image((NY, NX)).astype(bool)
        assert spec["num_pixels"] == int(mask.sum())
        s, n, mean = _expected(data[2:10], mask)
        np.testing.assert_allclose(spec["sum"], s, rtol=1e-9)
        assert spec["count"] == n.tolist()
        np.testing.assert_allclose(spec["mean"], mean, rtol=1e-9)
    # hand check of the box: x 15..20, y 4..7 (0-based centres inside 17±3, 5±2)
    hand = np.zeros((NY, NX), dtype=bool)
    hand[4:7, 15:20] = True
    assert body["spectra"][1]["num_pixels"] == int(hand.sum()) == 15
    np.testing.assert_allclose(body["spectra"][1]["sum"], data[2:10, 4:7, 15:20].sum(axis=(1, 2)), rtol=1e-6)


def test_crtf_pixel_and_sky_regions(client, cube) -> None:  # noqa: ANN001
    ds, headers, data, path = cube
    wcs = WCS(fits.getheader(path)).celestial
    ra, dec = wcs.pixel_to_world_values(7.0, 5.0)
    text = (f"#CRTF\ncircle [[7pix, 5pix], 3.3pix]\n"
            f"circle [[{ra:.8f}deg, {dec:.8f}deg], {3.3 * 0.004 * 3600:.6f}arcsec], coord=J2000\n")
    body = _post(client, headers, dataset_id=ds, regions=text)
    assert body["valid"], body
    pix, sky = body["spectra"]
    mask = CirclePixelRegion(PixCoord(7, 5), 3.3).to_mask(mode="center").to_image((NY, NX)).astype(bool)
    s, n, _ = _expected(data, mask)
    np.testing.assert_allclose(pix["sum"], s, rtol=1e-9)
    assert pix["num_pixels"] == sky["num_pixels"] == int(mask.sum())
    np.testing.assert_allclose(sky["sum"], pix["sum"], rtol=1e-9)


def test_blank_region_gives_null_mean(client, cube) -> None:  # noqa: ANN001
    ds, headers, _, _ = cube
    body = _post(client, headers, dataset_id=ds, regions="image\nbox(12,19,4,2,0)")
    spec = body["spectra"][0]
    assert spec["num_pixels"] > 0 and spec["count"] == [0] * NZ
    assert spec["mean"] == [None] * NZ and spec["sum"] == [None] * NZ


@pytest.mark.parametrize(("text", "message"), [
    ("image\ncircle(500,500,3)", "covers no pixel"),
    ("image\ncircle(5,5,1e9)", "far larger than the image"),
    ("image\npoint(5,5)", "no area"),
    ("this is not a region", "unable to parse line"),
    ("image\ncircle(5,5,2)\nbogus(1,2)", "unable to parse line"),
    ("", "at least one"),
    ("#CRTF\ncircle [[230.5deg, 5deg], 40arcsec]", "no 'coord='"),
])
def test_bad_regions_are_clear_errors(client, cube, text, message) -> None:  # noqa: ANN001
    ds, headers, _, _ = cube
    response = client.post("/v1/cube/region_spectrum", json={"dataset_id": ds, "regions": text}, headers=headers)
    assert response.status_code == 200 and response.json()["valid"] is False
    assert message in response.json()["error"], response.json()

"""/v1/products/moment end to end: closed-form cubes, masks, units, errors, FITS output, tasks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fastapi.testclient import TestClient

from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 64, 10, 12
V0, DV = 200.0, -5.0  # km/s: channel z at V0 + z*DV


@pytest.fixture
def gauss(client: TestClient, data_dir: Path) -> tuple[dict, dict, np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian lines with per-pixel centre and width (km/s) on a VRAD axis in m/s."""
    v = V0 + DV * np.arange(NZ)
    yy, xx = np.mgrid[0:NY, 0:NX]
    centre = 50.0 + 4.0 * xx - 3.0 * yy
    sigma = 12.0 + 0.5 * yy
    cube = (2.0 * np.exp(-0.5 * ((v[:, None, None] - centre) / sigma) ** 2)).astype(np.float32)
    cube[:, 0, 0] = np.nan
    path = write_cube(data_dir / "gauss.fits", cube, crval3=V0 * 1000.0, cdelt3=DV * 1000.0)
    body = open_dataset(client, path)
    return body, {"X-Visivo-Session": body["session_id"]}, cube, centre, sigma


def _moment(client, ds, headers, **req) -> dict:
    return client.post("/v1/products/moment", json={"dataset_id": ds, **req}, headers=headers).json()


def test_orders_against_closed_form(client: TestClient, gauss) -> None:
    body, headers, cube, centre, sigma = gauss
    ds = body["dataset_id"]
    m0 = _moment(client, ds, headers, order=0)
    assert m0["valid"] and m0["moment_unit"] == "Jy/beam km/s" and m0["spectral_axis_unit"] == "km/s"
    map0 = decode(m0, shape=(NY, NX))
    expected0 = 2.0 * sigma * np.sqrt(2 * np.pi)
    assert np.isnan(map0[0, 0])
    np.testing.assert_allclose(map0[1:], expected0[1:], rtol=1e-4)
    map1 = decode(_moment(client, ds, headers, moment_order=1), shape=(NY, NX))
    np.testing.assert_allclose(map1[1:], centre[1:], atol=1e-3)
    m2 = _moment(client, ds, headers, order=2)
    assert m2["moment_unit"] == "km^2/s^2"
    np.testing.assert_allclose(decode(m2, shape=(NY, NX))[1:], sigma[1:] ** 2, rtol=1e-3)
    skew = decode(_moment(client, ds, headers, order=3), shape=(NY, NX))
    kurt = decode(_moment(client, ds, headers, order=4), shape=(NY, NX))
    assert np.nanmax(np.abs(skew)) < 1e-3 and np.nanmax(np.abs(kurt)) < 1e-2
    peak = decode(_moment(client, ds, headers, order=8), shape=(NY, NX))
    np.testing.assert_allclose(peak[1:], cube[:, 1:].max(axis=0))
    low = _moment(client, ds, headers, order=10)
    assert low["moment_unit"] == "Jy/beam"
    np.testing.assert_allclose(decode(low, shape=(NY, NX))[1:], cube[:, 1:].min(axis=0))
    rms = decode(_moment(client, ds, headers, order=6), shape=(NY, NX))
    np.testing.assert_allclose(rms[1:], np.sqrt(np.mean(cube[:, 1:].astype(np.float64) ** 2, axis=0)), rtol=1e-5)


def test_channel_range_threshold_and_rms(client: TestClient, gauss) -> None:
    body, headers, cube, _, _ = gauss
    ds = body["dataset_id"]
    part = _moment(client, ds, headers, order=0, channel_start=10, channel_end=20)
    assert part["channel_start"] == 10 and part["channel_end"] == 20
    np.testing.assert_allclose(decode(part, shape=(NY, NX))[1:], (cube[10:21].sum(axis=0) * 5.0)[1:], rtol=1e-5)
    masked = _moment(client, ds, headers, order=0, mask_enabled=True, threshold_value=1.0)
    assert masked["threshold_used"] == 1.0
    expected = np.where(cube >= 1.0, cube, 0).sum(axis=0) * 5.0
    got = decode(masked, shape=(NY, NX))
    keep = np.isfinite(got)
    np.testing.assert_allclose(got[keep], expected[keep], rtol=1e-5)
    by_rms = _moment(client, ds, headers, order=0, rms=0.25, snr=4)
    assert by_rms["threshold_used"] == pytest.approx(1.0)
    assert by_rms["data_base64"] == masked["data_base64"]
    none = _moment(client, ds, headers, order=0)
    assert none["threshold_used"] is None


def test_moment_errors(client: TestClient, gauss) -> None:
    body, headers, _, _, _ = gauss
    ds = body["dataset_id"]
    assert "Unsupported moment order" in _moment(client, ds, headers, order=7)["error"]
    assert _moment(client, ds, headers, order=0, channel_start=30, channel_end=10)["error"] == "Invalid channel range."
    assert "No valid voxels" in _moment(client, ds, headers, order=0, threshold=1e9)["error"]
    assert "Missing moment order" in _moment(client, ds, headers)["error"]
    assert _moment(client, ds, headers, order=0, convention="aips")["valid"] is False
    assert _moment(client, ds, headers, order=0, rms=-1)["valid"] is False
    image = open_dataset(client, "3c273_continuum.fits.gz", session=body["session_id"])
    # a 2-D image is a depth-1 cube: moment 0 is the plane times the unit width
    assert _moment(client, image["dataset_id"], headers, order=8)["valid"] is True


def test_save_writes_fits_with_wcs_and_history(client: TestClient, gauss, settings) -> None:
    body, headers, _, _, _ = gauss
    res = _moment(client, body["dataset_id"], headers, order=1, channel_start=2, channel_end=60, save=True)
    path = Path(res["output_path"])
    assert path.parent == settings.output_dir and path.exists()
    assert not list(settings.output_dir.glob(".*part"))
    with fits.open(path) as hdul:
        header, data = hdul[0].header, hdul[0].data
    assert header["NAXIS"] == 2 and header["BUNIT"] == "km/s"
    assert WCS(header).celestial.naxis == 2 and header["CTYPE1"].startswith("RA")
    history = " ".join(str(h) for h in header["HISTORY"])
    assert "order=1" in history and "channels=2..60" in history and "gauss.fits" in history and "km/s" in history
    np.testing.assert_array_equal(data.astype(np.float32), decode(res, shape=(NY, NX)))
    reopened = open_dataset(client, path, session=body["session_id"])
    assert reopened["kind"] == "image"


def test_moment_task_and_cache(client: TestClient, gauss) -> None:
    body, headers, _, _, _ = gauss
    req = {"dataset_id": body["dataset_id"], "order": 2}
    task = client.post("/v1/tasks/moment", json=req, headers=headers).json()
    deadline = time.time() + 30
    status = {}
    while time.time() < deadline:
        status = client.get(f"/v1/tasks/{task['task_id']}").json()
        if status["status"] in ("done", "error"):
            break
        time.sleep(0.02)
    assert status["status"] == "done" and status["result"]["moment_unit"] == "km^2/s^2"
    sync = client.post("/v1/products/moment", json=req, headers=headers).json()
    assert sync["cache_hit"] is True and sync["data_base64"] == status["result"]["data_base64"]

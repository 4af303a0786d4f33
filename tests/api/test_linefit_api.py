"""`POST /v1/spectral/linefit` end to end (issue 17, item 5).

References: the known parameters of a synthetic cube, ``scipy.optimize.curve_fit`` on real
NGC 5921 spectra (velocities from the header by hand), the line-width answer (the same fit),
and astropy reading the saved multi-extension FITS back with its WCS.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fastapi.testclient import TestClient
from scipy.optimize import curve_fit

from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 96, 8, 10
DV = 2.0  # km/s


def _g(x, a, m, s):
    return a * np.exp(-0.5 * ((x - m) / s) ** 2)


def _map(res: dict, name: str) -> np.ndarray:
    entry = res["maps"][name]
    return decode(entry, "data_base64", tuple(entry["shape"]))


@pytest.fixture
def lines(client: TestClient, data_dir: Path):
    """Lines of known amplitude, centre and σ (km/s) on a decreasing VRAD axis, plus noise."""
    rng = np.random.default_rng(17)
    v = 100.0 - DV * np.arange(NZ)
    yy, xx = np.mgrid[0:NY, 0:NX]
    amp, centre, sigma = 0.5 + 0.1 * xx, -10.0 + 2.0 * yy, 8.0 + 0.5 * xx
    cube = _g(v[:, None, None], amp, centre, sigma) + rng.normal(0, 0.01, (NZ, NY, NX))
    cube[:, 0, 0] = 0.0  # no line
    path = write_cube(data_dir / "fitlines.fits", cube.astype(np.float32), crval3=100e3, cdelt3=-DV * 1e3)
    body = open_dataset(client, path)
    return body, {"X-Visivo-Session": body["session_id"]}, (amp, centre, sigma)


def test_linefit_answer_units_and_values(client: TestClient, lines) -> None:
    body, headers, (amp, centre, sigma) = lines
    req = {"dataset_id": body["dataset_id"]}
    res = client.post("/v1/spectral/linefit", json=req, headers=headers).json()
    assert res["valid"], res
    assert res["components"] == 1 and not res["cache_hit"] and res["computed_on"] == "cpu"
    assert set(res["maps"]) == {"amplitude", "amplitude_err", "centre", "centre_err", "sigma", "sigma_err",
                                "reduced_chi2"}
    units = {k: m["unit"] for k, m in res["maps"].items()}
    assert units["amplitude"] == units["amplitude_err"] == "Jy/beam"
    assert units["centre"] == units["sigma_err"] == "km/s" == res["spectral_axis_unit"]
    a, c, s = (_map(res, n)[0] for n in ("amplitude", "centre", "sigma"))
    ae, ce, se = (_map(res, n + "_err")[0] for n in ("amplitude", "centre", "sigma"))
    fit = np.isfinite(a)
    assert not fit[0, 0] and fit.sum() == NY * NX - 1 == res["fitted_pixels"]
    for val, err, truth in ((a, ae, amp), (c, ce, centre), (s, se, sigma)):
        assert np.all(np.abs(val - truth)[fit] <= 5.0 * err[fit])  # within 5σ of the truth
    # closed form (Fisher matrix, A and σ correlated, the centre not): err(A) = noise·sqrt(3Δv / (2√π σ))
    expected = 0.01 * np.sqrt(3.0 * DV / (2.0 * np.sqrt(np.pi) * sigma))
    ratio = ae[fit] / expected[fit]  # RSS/dof of 93 residuals scatters ~7 % per pixel
    assert abs(np.median(ratio) - 1.0) < 0.05 and np.all(np.abs(ratio - 1.0) < 0.3)
    # the same fit as the line width
    lw = client.post("/v1/spectral/linewidth", json={**req, "method": "fwhm"}, headers=headers).json()
    fwhm = decode(lw, "fwhm_base64", (NY, NX))
    np.testing.assert_allclose(2.354820045 * s, fwhm, rtol=1e-6)
    again = client.post("/v1/spectral/linefit", json=req, headers=headers).json()
    assert again["cache_hit"] and again["maps"]["sigma"]["data_base64"] == res["maps"]["sigma"]["data_base64"]


def test_linefit_two_components_and_saved_mef(client: TestClient, data_dir: Path, settings) -> None:
    rng = np.random.default_rng(5)
    v = 100.0 - DV * np.arange(NZ)
    cube = (_g(v, 1.0, 40.0, 8.0) + _g(v, 0.7, -20.0, 10.0))[:, None, None] + rng.normal(0, 0.02, (NZ, 4, 5))
    path = write_cube(data_dir / "double.fits", cube.astype(np.float32), crval3=100e3, cdelt3=-DV * 1e3)
    body = open_dataset(client, path)
    headers = {"X-Visivo-Session": body["session_id"]}
    res = client.post("/v1/spectral/linefit", json={"dataset_id": body["dataset_id"], "components": 2, "save": True},
                      headers=headers).json()
    assert res["valid"], res
    ncomp = _map(res, "ncomp")
    assert (ncomp == 2).all() and res["two_component_pixels"] == 20
    c = _map(res, "centre")
    assert c.shape == (2, 4, 5)
    np.testing.assert_allclose(c[0], -20.0, atol=0.5)  # ordered by centre: the lower velocity first
    np.testing.assert_allclose(c[1], 40.0, atol=0.5)
    np.testing.assert_allclose(_map(res, "amplitude")[1], 1.0, atol=0.05)
    out = Path(res["output_path"])
    assert out.parent == settings.output_dir and out.exists()
    with fits.open(out) as hdul:
        assert any("linefit components=2" in str(h) for h in hdul[0].header["HISTORY"])
        names = {(h.name, h.ver) for h in hdul[1:]}
        assert ("AMPLITUDE", 1) in names and ("SIGMA_ERR", 2) in names and ("NCOMP", 1) in names
        hdu = hdul["CENTRE", 2]
        np.testing.assert_array_equal(hdu.data, c[1])
        assert hdu.header["BUNIT"] == "km/s" and hdul["AMPLITUDE", 1].header["BUNIT"] == "Jy/beam"
        wcs = WCS(hdu.header)
        assert wcs.naxis == 2 and wcs.wcs.ctype[0] == "RA---SIN"
        assert any("channels=0..95" in str(h) for h in hdu.header["HISTORY"])


@pytest.mark.parametrize(("body", "message"), [
    ({"components": 3}, "components must be 1 or 2"),
    ({"channel_start": 30, "channel_end": 10}, "Invalid channel range"),
    ({"channel_start": 10, "channel_end": 14, "components": 2}, "at least 7 channels"),
    ({"velocity_convention": "sideways"}, "velocity_convention"),
])
def test_linefit_bad_input_is_a_clear_error(client: TestClient, lines, body, message) -> None:
    ds, headers, _ = lines
    res = client.post("/v1/spectral/linefit", json={"dataset_id": ds["dataset_id"], **body}, headers=headers)
    assert res.status_code == 200
    assert res.json()["valid"] is False and message in res.json()["error"]


def test_linefit_unknown_dataset_and_bad_types(client: TestClient, lines) -> None:
    ds, headers, _ = lines
    assert client.post("/v1/spectral/linefit", json={"dataset_id": "ds_000000000000"},
                       headers=headers).status_code == 404
    assert client.post("/v1/spectral/linefit", json={"dataset_id": ds["dataset_id"], "components": "two"},
                       headers=headers).status_code == 422


def test_linefit_task(client: TestClient, lines) -> None:
    ds, headers, _ = lines
    start = client.post("/v1/tasks/linefit", json={"dataset_id": ds["dataset_id"], "snr": 2.0}, headers=headers)
    task = start.json()
    assert start.status_code == 200 and task["valid"], task
    for _ in range(200):
        state = client.get(f"/v1/tasks/{task['task_id']}", headers=headers).json()
        if state["status"] in ("done", "completed", "failed", "error", "cancelled"):
            break
        time.sleep(0.05)
    result = state.get("result") or state
    assert result["valid"], state
    assert result["fitted_pixels"] == NY * NX - 1


def test_ngc5921_against_curve_fit(client: TestClient, ngc5921: Path) -> None:
    body = open_dataset(client, ngc5921)
    headers = {"X-Visivo-Session": body["session_id"]}
    res = client.post("/v1/spectral/linefit", json={"dataset_id": body["dataset_id"], "channel_start": 5,
                                                    "channel_end": 50}, headers=headers).json()
    assert res["valid"], res
    assert res["spectral_axis_unit"] == "km/s"
    with fits.open(ngc5921) as hdul:
        data = np.squeeze(hdul[0].data).astype(np.float64)
        h = hdul[0].header
    assert h["CTYPE3"].startswith("VRAD")
    v = (h["CRVAL3"] + (np.arange(data.shape[0]) + 1 - h["CRPIX3"]) * h["CDELT3"]) / 1e3  # km/s
    z = slice(5, 51)
    maps = {n: _map(res, n)[0] for n in ("amplitude", "centre", "sigma")}
    errs = {n: _map(res, n + "_err")[0] for n in maps}
    ys, xs = np.nonzero(np.isfinite(maps["amplitude"]))
    assert ys.size > 400  # the galaxy
    rng = np.random.default_rng(0)
    for i in rng.choice(ys.size, 60, replace=False):
        y, x = ys[i], xs[i]
        spec = data[z, y, x]
        ok = np.isfinite(spec)
        start = [float(maps[n][y, x]) for n in maps]
        p, cov = curve_fit(_g, v[z][ok], spec[ok], p0=start)
        e = np.sqrt(np.diag(cov))
        mine = np.array(start)
        err = np.array([float(errs[n][y, x]) for n in maps])
        assert np.all(np.abs(mine - p) <= 0.02 * e + 2e-6 * np.abs(p)), (y, x, mine, p, e)
        np.testing.assert_allclose(err, e, rtol=0.01)


def test_frequency_axis_gives_velocities_with_the_rest_frequency(client: TestClient, data_dir: Path) -> None:
    """A FREQ axis with RESTFRQ: centre and σ in km/s (radio convention, v = c(1 − ν/ν₀)), as line width."""
    rest, dnu, nz = 1.420405752e9, 9.765625e3, 80  # ~2.06 km/s channels
    nu = rest - (np.arange(nz) - 40) * dnu
    v = 299792.458 * (1.0 - nu / rest)  # km/s, the reference by hand
    rng = np.random.default_rng(8)
    cube = _g(v, 1.0, 12.0, 9.0)[:, None, None] + rng.normal(0, 0.02, (nz, 3, 3))
    header = fits.Header()
    for i, (ctype, cunit, crval, cdelt, crpix) in enumerate(
            [("RA---SIN", "deg", 230.5, -0.004, 2.0), ("DEC--SIN", "deg", 5.0, 0.004, 2.0),
             ("FREQ", "Hz", nu[0], -dnu, 1.0)], start=1):
        header[f"CTYPE{i}"], header[f"CUNIT{i}"], header[f"CRVAL{i}"] = ctype, cunit, crval
        header[f"CDELT{i}"], header[f"CRPIX{i}"] = cdelt, crpix
    header["RESTFRQ"], header["BUNIT"] = rest, "Jy/beam"
    path = data_dir / "freq.fits"
    fits.PrimaryHDU(cube.astype(np.float32), header).writeto(path)
    body = open_dataset(client, path)
    res = client.post("/v1/spectral/linefit", json={"dataset_id": body["dataset_id"]},
                      headers={"X-Visivo-Session": body["session_id"]}).json()
    assert res["valid"], res
    assert res["spectral_axis_unit"] == "km/s" and res["velocity_convention"] == "radio"
    assert res["rest_freq_hz"] == rest
    c, ce = _map(res, "centre")[0], _map(res, "centre_err")[0]
    s = _map(res, "sigma")[0]
    assert np.all(np.abs(c - 12.0) <= 5.0 * ce)
    np.testing.assert_allclose(s, 9.0, rtol=0.05)

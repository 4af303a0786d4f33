"""Moment uncertainty maps through the API (issue 17 item 2): given and estimated noise, FITS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from cpu_fallback.moment_errors import moment_sigma_maps
from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 30, 24, 24
V0, DV = 100.0, -4.0  # km/s


@pytest.fixture
def line_cube(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray, np.ndarray]:
    """A Gaussian line in the central 4×4 pixels on noise whose σ grows along the spectral axis."""
    rng = np.random.default_rng(21)
    v = V0 + DV * np.arange(NZ)
    noise = np.linspace(0.05, 0.15, NZ)
    cube = noise[:, None, None] * rng.standard_normal((NZ, NY, NX))
    cube[:, 10:14, 10:14] += 2.0 * np.exp(-0.5 * ((v - 40.0) / 12.0) ** 2)[:, None, None]
    cube = cube.astype(np.float32)
    path = write_cube(data_dir / "line.fits", cube, crval3=V0 * 1e3, cdelt3=DV * 1e3)
    body = open_dataset(client, path)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, cube, noise


def test_given_rms_closed_forms(client, line_cube) -> None:  # noqa: ANN001
    ds, headers, cube, _ = line_cube
    body = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "order": 1, "uncertainty": True, "rms": 0.1, "threshold": 0.3}).json()
    assert body["valid"] and body["noise_source"] == "request" and body["noise_per_channel"] == [0.1] * NZ
    sig1 = decode(body, "sigma_base64", (NY, NX))
    v = V0 + DV * np.arange(NZ)
    x = cube.astype(np.float64)
    keep = np.isfinite(x) & (x >= 0.3)
    xk = np.where(keep, x, 0.0)
    m0 = (xk * abs(DV)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = (xk * v[:, None, None] * abs(DV)).sum(axis=0) / m0
        expected = np.sqrt((keep * ((v[:, None, None] - m1) * abs(DV) * 0.1) ** 2).sum(axis=0)) / np.abs(m0)
    mom1 = decode(body, shape=(NY, NX))
    fin = np.isfinite(mom1)
    assert fin[10:14, 10:14].all()
    np.testing.assert_allclose(sig1[fin], expected[fin], rtol=1e-5)
    assert np.isnan(sig1[~fin]).all()
    # the same request for order 0: σ_M0 = |Δv|·rms·√N_kept
    body0 = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "order": 0, "uncertainty": True, "rms": 0.1, "threshold": 0.3}).json()
    sig0 = decode(body0, "sigma_base64", (NY, NX))
    n = keep.sum(axis=0)
    np.testing.assert_allclose(sig0[n > 0], abs(DV) * 0.1 * np.sqrt(n[n > 0]), rtol=1e-6)


def test_estimated_noise_and_multi_extension_fits(client, line_cube) -> None:  # noqa: ANN001
    ds, headers, cube, noise = line_cube
    body = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "orders": [0, 1, 2, 8], "uncertainty": True, "save": True}).json()
    assert body["valid"], body
    assert body["noise_source"].startswith("estimated")
    est = np.array(body["noise_per_channel"])
    np.testing.assert_allclose(est, noise, rtol=0.15)  # 576 pixels per channel, 16 with the line
    assert abs(np.mean(est / noise) - 1.0) < 0.03
    sig = moment_sigma_maps(cube, V0 + DV * np.arange(NZ), np.full(NZ, DV), est)
    by_order = {m["order"]: m for m in body["maps"]}
    assert by_order[8]["sigma_base64"] is None
    for k in (0, 1, 2):
        got = decode(by_order[k], "sigma_base64", (NY, NX))
        mom = decode(by_order[k], shape=(NY, NX))
        np.testing.assert_array_equal(got, np.where(np.isfinite(mom), sig[k], np.nan))
        assert by_order[k]["sigma_range_max"] == pytest.approx(float(np.nanmax(got)))
    with fits.open(body["output_path"]) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MOM0", "SIG0", "MOM1", "SIG1", "MOM2", "SIG2", "MOM8"]
        np.testing.assert_array_equal(hdul["SIG1"].data.astype(np.float32),
                                      decode(by_order[1], "sigma_base64", (NY, NX)))
        assert hdul["SIG1"].header["BUNIT"] == "km/s" and "bettermoments" in str(hdul["SIG1"].header["HISTORY"])


def test_casa_dispersion_sigma(client, line_cube) -> None:  # noqa: ANN001
    ds, headers, cube, _ = line_cube
    body = client.post("/v1/products/moment", headers=headers, json={
        "dataset_id": ds, "order": 2, "convention": "casa", "uncertainty": True, "rms": 0.1,
        "includepix": [0.3, 100.0]}).json()
    assert body["valid"], body
    v = V0 + DV * np.arange(NZ)
    ref = moment_sigma_maps(cube, v, np.full(NZ, DV), 0.1, include=(0.3, 100.0), dispersion=True)[2]
    got = decode(body, "sigma_base64", (NY, NX))
    fin = np.isfinite(decode(body, shape=(NY, NX)))
    np.testing.assert_array_equal(got[fin], ref[fin])
    assert np.isfinite(got[10:14, 10:14]).all()

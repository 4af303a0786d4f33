"""The line-width routes on the compiled CPU path: `kernel` says which, maps equal the NumPy oracle.

References: the oracle :mod:`cpu_fallback.linewidth` on the cube as written, and the closed form
``FWHM = 2 sqrt(2 ln 2) sigma`` of the lines put in it.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpu_fallback.linewidth import equivalent_width, gaussian_linewidth
from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 64, 10, 12
DV = 5.0  # km/s


@pytest.fixture
def lines_ds(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    v = 100.0 - DV * np.arange(NZ)  # km/s, CDELT3 = -5 km/s
    yy, xx = np.mgrid[0:NY, 0:NX]
    sigma = 12.0 + 2.0 * xx  # km/s
    centre = -60.0 + 6.0 * yy
    cube = np.exp(-0.5 * ((v[:, None, None] - centre) / sigma) ** 2) + rng.normal(0, 0.02, (NZ, NY, NX))
    cube = cube.astype(np.float32)
    cube[:, 0, 0] = np.nan
    cube[rng.random(cube.shape) < 0.01] = np.nan
    body = open_dataset(client, write_cube(data_dir / "lw_compiled.fits", cube, crval3=100.0e3, cdelt3=-DV * 1e3))
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, cube, v, sigma


def _post(client: TestClient, headers: dict, route: str = "/v1/spectral/linewidth", **req):
    res = client.post(route, json=req, headers=headers)
    assert res.status_code == 200, res.text
    return res


def test_route_uses_numba_and_matches_the_oracle(client: TestClient, lines_ds) -> None:
    ds, headers, cube, v, sigma = lines_ds
    body = _post(client, headers, dataset_id=ds, channel_start=2, channel_end=61).json()
    assert body["valid"] and body["kernel"] == "numba" and body["computed_on"] == "cpu"
    fwhm, ew = decode(body, "fwhm_base64", (NY, NX)), decode(body, "ew_base64", (NY, NX))
    want_f, want_e = gaussian_linewidth(cube[2:62], v[2:62], np.full(60, DV), snr_cut=body["snr_cut"])
    np.testing.assert_array_equal(np.isnan(fwhm), np.isnan(want_f))
    np.testing.assert_allclose(fwhm, want_f, rtol=1e-5, equal_nan=True)
    np.testing.assert_array_equal(ew, want_e)
    truth = 2.0 * math.sqrt(2.0 * math.log(2.0)) * sigma
    assert np.isnan(fwhm[0, 0]) and np.nanmax(np.abs(fwhm - truth) / truth) < 0.03
    assert body["fwhm_valid_pixels"] == NY * NX - 1
    blob = _post(client, headers, "/v1/spectral/linewidth/binary", dataset_id=ds, channel_start=2,
                 channel_end=61).content
    w, h, n = struct.unpack("<iii", blob[:12])
    assert (w, h, n) == (NX, NY, NX * NY * 4)
    np.testing.assert_array_equal(np.frombuffer(blob[12 : 12 + n], "<f4").reshape(NY, NX), fwhm)


def test_ew_only_and_threshold(client: TestClient, lines_ds) -> None:
    ds, headers, cube, v, _ = lines_ds
    body = _post(client, headers, dataset_id=ds, method="ew", mask_enabled=True, threshold_value=0.05,
                 snr=2.0).json()
    assert body["valid"] and body["kernel"] == "numba" and body.get("fwhm_base64") is None
    want = equivalent_width(cube, np.full(NZ, DV), snr_cut=2.0, threshold=0.05)
    np.testing.assert_array_equal(decode(body, "ew_base64", (NY, NX)), want)


def test_switch_off_gives_the_numpy_oracle(client: TestClient, lines_ds, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, headers, cube, v, _ = lines_ds
    monkeypatch.setenv("VISIVO_COMPILED", "0")
    body = _post(client, headers, dataset_id=ds, snr=2.5).json()
    assert body["valid"] and body["kernel"] == "numpy"
    want_f, _ = gaussian_linewidth(cube, v, np.full(NZ, DV), snr_cut=2.5)
    np.testing.assert_array_equal(decode(body, "fwhm_base64", (NY, NX)), want_f)
    monkeypatch.setenv("VISIVO_COMPILED", "1")
    fast = _post(client, headers, dataset_id=ds, snr=2.4999).json()  # another request: no cache hit
    assert fast["kernel"] == "numba"
    np.testing.assert_allclose(decode(fast, "fwhm_base64", (NY, NX)), want_f, rtol=1e-5, equal_nan=True)

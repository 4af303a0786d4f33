"""Issue 11, finding 4: frequency (and wavelength) axes with a rest frequency give velocities in km/s.

The FREQ cube is NGC 5921 (VRAD in the demo file) with its spectral axis rewritten as FREQ through
the radio relation ``ν = ν₀·(1 − v/c)`` (exact: a radio velocity axis is linear in frequency),
RESTFRQ kept. References: casatasks immoments on that FREQ file (km/s), spectral-cube in the
optical and relativistic conventions, and the closed-form Doppler relations.
"""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.casa_runtime import casatasks_available
from app.settings import DEMO_DATA_ROOT
from tests.api.conftest import decode, open_dataset

C = 299792458.0
C_KMS = C / 1000.0
NU0 = 1420405752.0
needs_casa = pytest.mark.skipif(not casatasks_available(), reason="casatasks not installed (`casa` extra)")


def _ngc5921() -> tuple[fits.Header, np.ndarray]:
    with gzip.open(DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz") as handle, fits.open(handle) as hdul:
        return hdul[0].header.copy(), np.asarray(hdul[0].data, dtype=np.float32)


def _as_freq(header: fits.Header, *, restfrq: str | None = "RESTFRQ") -> fits.Header:
    h = header.copy()
    v0, dv = h["CRVAL3"], h["CDELT3"]  # m/s
    h["CTYPE3"], h["CUNIT3"] = "FREQ", "Hz"
    h["CRVAL3"], h["CDELT3"] = NU0 * (1.0 - v0 / C), -NU0 * dv / C
    for key in ("ALTRVAL", "ALTRPIX", "VELREF", "RESTFRQ"):
        h.remove(key, ignore_missing=True)
    if restfrq:
        h[restfrq] = NU0
    return h


@pytest.fixture
def cubes(data_dir: Path) -> dict[str, Path]:
    header, data = _ngc5921()
    paths = {"vrad": data_dir / "ngc_vrad.fits", "freq": data_dir / "ngc_freq.fits",
             "freq_restfreq": data_dir / "ngc_freq_legacy.fits", "freq_norest": data_dir / "ngc_freq_norest.fits"}
    fits.PrimaryHDU(data, header).writeto(paths["vrad"])
    fits.PrimaryHDU(data, _as_freq(header)).writeto(paths["freq"])
    fits.PrimaryHDU(data, _as_freq(header, restfrq="RESTFREQ")).writeto(paths["freq_restfreq"])
    fits.PrimaryHDU(data, _as_freq(header, restfrq=None)).writeto(paths["freq_norest"])
    return paths


def _post(client: TestClient, route: str, opened: dict, **body) -> dict:
    return client.post(route, json={"dataset_id": opened["dataset_id"], **body},
                       headers={"X-Visivo-Session": opened["session_id"]}).json()


def _vrad_kms(n: int = 56) -> np.ndarray:
    header, _ = _ngc5921()
    return (header["CRVAL3"] + header["CDELT3"] * (np.arange(n) + 1 - header["CRPIX3"])) / 1000.0


@pytest.mark.casa
@needs_casa
def test_freq_cube_moment1_matches_casa_immoments_in_km_s(client: TestClient, cubes, tmp_path: Path) -> None:
    from tests.kernels.test_casa_moments import _casa_maps

    ref = _casa_maps(cubes["freq"], tmp_path, (0, 1))
    opened = open_dataset(client, cubes["freq"])
    for order in (0, 1):
        res = _post(client, "/v1/products/moment", opened, order=order, convention="casa")
        assert res["valid"], res
        assert res["spectral_axis_unit"] == "km/s" and res["velocity_convention"] == "radio"
        assert res["rest_freq_hz"] == NU0 and res["rest_freq_source"] == "header"
        ours, theirs = decode(res, shape=(256, 256)), ref[order]
        both = np.isfinite(ours) & np.isfinite(theirs)
        assert both.sum() > 1000
        peak = float(np.max(np.abs(theirs[both])))
        assert np.max(np.abs(ours[both] - theirs[both])) <= 1e-4 * peak, f"moment {order}"
        np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    assert res["moment_unit"] == "km/s"
    # where the line is, moment 1 is the galaxy's velocity range (km/s, not Hz)
    line = ref[0] > 0.2 * np.nanmax(ref[0])
    m1 = decode(res, shape=(256, 256))[line]
    assert np.nanmin(m1) > 1320.0 and np.nanmax(m1) < 1620.0  # the axis spans 1330..1613 km/s


@pytest.mark.parametrize("name", ["freq", "freq_restfreq"])
def test_reference_moments_of_freq_cube_equal_the_vrad_cube(client: TestClient, cubes, name: str) -> None:
    vrad, freq = open_dataset(client, cubes["vrad"]), open_dataset(client, cubes[name])
    for order in (0, 1, 2):
        a = _post(client, "/v1/products/moment", vrad, order=order, channel_start=5, channel_end=50)
        b = _post(client, "/v1/products/moment", freq, order=order, channel_start=5, channel_end=50)
        assert b["spectral_axis_unit"] == "km/s" and b["moment_unit"] == a["moment_unit"]
        np.testing.assert_allclose(b["spectral_range"], a["spectral_range"], rtol=1e-9)
        ma, mb = decode(a, shape=(256, 256)), decode(b, shape=(256, 256))
        np.testing.assert_array_equal(np.isnan(ma), np.isnan(mb))
        np.testing.assert_allclose(mb[np.isfinite(mb)], ma[np.isfinite(ma)], rtol=2e-4,
                                   atol=1e-5 * float(np.nanmax(np.abs(ma))))


@pytest.mark.parametrize("convention", ["optical", "relativistic"])
def test_other_conventions_match_spectral_cube(client: TestClient, cubes, convention: str) -> None:
    import astropy.units as u
    from spectral_cube import SpectralCube

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = SpectralCube.read(cubes["freq"]).with_spectral_unit(
            u.km / u.s, velocity_convention=convention, rest_value=NU0 * u.Hz)
        m0 = cube.moment(order=0, axis=0).value
        m1 = cube.moment(order=1, axis=0).value
        axis = cube.spectral_axis.to_value(u.km / u.s)
    opened = open_dataset(client, cubes["freq"])
    res = _post(client, "/v1/products/moment", opened, order=1, velocity_convention=convention)
    assert res["valid"], res
    assert res["velocity_convention"] == convention and res["spectral_axis_unit"] == "km/s"
    np.testing.assert_allclose(res["spectral_range"], [axis.min(), axis.max()], rtol=1e-9)
    ours = decode(res, shape=(256, 256)).astype(np.float64)
    good = np.isfinite(ours) & np.isfinite(m1) & (m0 > 0.05 * np.nanmax(m0))
    assert good.sum() > 500
    # ours weights by the channel width (ΣI·v·Δv / ΣI·Δv); spectral-cube weights channels equally. On the
    # non-linear optical axis Δv varies by ~0.2 % across the band: differences ≤ 3e-4 (0.03 channel).
    np.testing.assert_allclose(ours[good], m1[good], rtol=3e-4)
    # a native radio axis converts to the requested convention too (no rest frequency needed)
    vrad = _post(client, "/v1/products/moment", open_dataset(client, cubes["vrad"]), order=1,
                 velocity_convention=convention)
    np.testing.assert_allclose(vrad["spectral_range"], [axis.min(), axis.max()], rtol=1e-9)


def test_without_rest_frequency_frequency_units(client: TestClient, cubes) -> None:
    opened = open_dataset(client, cubes["freq_norest"])
    res = _post(client, "/v1/products/moment", opened, order=1, channel_start=5, channel_end=50)
    assert res["valid"], res
    assert res["spectral_axis_unit"] == "Hz" and res["moment_unit"] == "Hz"
    assert res["velocity_convention"] is None and res["rest_freq_hz"] is None
    freqs = NU0 * (1.0 - _vrad_kms()[5:51] / C_KMS)
    np.testing.assert_allclose(res["spectral_range"], [freqs.min(), freqs.max()], rtol=1e-12)


def test_request_rest_frequency_wins(client: TestClient, cubes) -> None:
    opened = open_dataset(client, cubes["freq"])
    rest = NU0 * (1.0 + 1000.0 / C_KMS)  # shifts every radio velocity by about +1000 km/s
    res = _post(client, "/v1/products/moment", opened, order=1, rest_freq_hz=rest)
    assert res["rest_freq_hz"] == rest and res["rest_freq_source"] == "request"
    freqs = NU0 * (1.0 - _vrad_kms() / C_KMS)
    expected = C_KMS * (1.0 - freqs / rest)
    np.testing.assert_allclose(res["spectral_range"], [expected.min(), expected.max()], rtol=1e-10)
    norest = _post(client, "/v1/products/moment", open_dataset(client, cubes["freq_norest"]), order=1,
                   rest_freq_hz=NU0)
    assert norest["spectral_axis_unit"] == "km/s" and norest["rest_freq_source"] == "request"
    np.testing.assert_allclose(norest["spectral_range"], [_vrad_kms().min(), _vrad_kms().max()], rtol=1e-9)


def test_linewidth_pv_stack_in_km_s(client: TestClient, cubes) -> None:
    vrad, freq = open_dataset(client, cubes["vrad"]), open_dataset(client, cubes["freq"])
    lw_a = _post(client, "/v1/spectral/linewidth", vrad, channel_start=5, channel_end=50, method="fwhm")
    lw_b = _post(client, "/v1/spectral/linewidth", freq, channel_start=5, channel_end=50, method="fwhm")
    assert lw_b["valid"], lw_b
    assert lw_b["fwhm_unit"] == "km/s" and lw_b["velocity_convention"] == "radio"
    fa, fb = decode(lw_a, "fwhm_base64", (256, 256)), decode(lw_b, "fwhm_base64", (256, 256))
    np.testing.assert_array_equal(np.isnan(fa), np.isnan(fb))
    np.testing.assert_allclose(fb[np.isfinite(fb)], fa[np.isfinite(fa)], rtol=1e-3)

    pv = _post(client, "/v1/cube/pv", freq, vertices=[[100, 100], [150, 150]])
    assert pv["valid"], pv
    assert pv["spectral_axis_unit"] == "km/s" and pv["velocity_convention"] == "radio"
    np.testing.assert_allclose(pv["spectral_values"], _vrad_kms(), rtol=1e-9)
    pv_opt = _post(client, "/v1/cube/pv", freq, vertices=[[100, 100], [150, 150]], velocity_convention="optical")
    freqs = NU0 * (1.0 - _vrad_kms() / C_KMS)
    np.testing.assert_allclose(pv_opt["spectral_values"], C_KMS * (NU0 / freqs - 1.0), rtol=1e-9)

    other = open_dataset(client, cubes["freq"], session=freq["session_id"])
    stack = client.post("/v1/spectral/stack", json={"dataset_ids": [freq["dataset_id"], other["dataset_id"]],
                                                    "velocity_convention": "relativistic"},
                        headers={"X-Visivo-Session": freq["session_id"]}).json()
    assert stack["valid"], stack
    assert stack["spectral_axis_unit"] == "km/s" and stack["velocity_convention"] == "relativistic"
    r = freqs / NU0
    np.testing.assert_allclose(stack["spectral_values"], C_KMS * (1 - r**2) / (1 + r**2), rtol=1e-9)


def test_saved_moment_fits_is_in_km_s(client: TestClient, cubes) -> None:
    opened = open_dataset(client, cubes["freq"])
    res = _post(client, "/v1/products/moment", opened, order=1, channel_start=5, channel_end=50, save=True)
    header = fits.getheader(res["output_path"])
    assert header["BUNIT"] == "km/s" and header["RESTFRQ"] == NU0
    history = "\n".join(str(h) for h in header["HISTORY"])
    assert "radio velocity" in history and "km/s" in history
    data = fits.getdata(res["output_path"])
    np.testing.assert_array_equal(data, decode(res, shape=(256, 256)))


@pytest.mark.parametrize("route", ["/v1/products/moment", "/v1/spectral/linewidth", "/v1/cube/pv"])
def test_bad_convention_or_rest_is_a_clear_error(client: TestClient, cubes, route: str) -> None:
    opened = open_dataset(client, cubes["freq"])
    extra = {"order": 1} if "moment" in route else ({"vertices": [[1, 1], [9, 9]]} if "pv" in route else {})
    bad = _post(client, route, opened, velocity_convention="sideways", **extra)
    assert bad["valid"] is False and "velocity_convention" in bad["error"] and "radio" in bad["error"]
    neg = _post(client, route, opened, rest_freq_hz=-5.0, **extra)
    assert neg["valid"] is False and "rest_freq_hz" in neg["error"]


def test_wavelength_axis_with_rest_frequency() -> None:
    from app.io.spectral import spectral_axis
    from app.io.wcs_info import analyse_wcs

    lam0 = C / NU0
    header = fits.Header()
    for i, (ct, cu, cv, cd) in enumerate([("RA---SIN", "deg", 10.0, -1e-3), ("DEC--SIN", "deg", 5.0, 1e-3),
                                           ("WAVE", "m", lam0, lam0 * 1e-4)], start=1):
        header[f"CTYPE{i}"], header[f"CUNIT{i}"], header[f"CRVAL{i}"], header[f"CDELT{i}"] = ct, cu, cv, cd
        header[f"CRPIX{i}"] = 1.0
    info = analyse_wcs(header, (4, 4, 5))
    plain = spectral_axis(info, 5)
    assert plain.unit == "m" and plain.velocity_convention is None
    axis = spectral_axis(info, 5, rest_freq_hz=NU0, velocity_convention="optical")
    lam = lam0 * (1.0 + 1e-4 * np.arange(5))
    np.testing.assert_allclose(axis.coords, C_KMS * (lam / lam0 - 1.0), rtol=1e-6, atol=1e-6)
    assert axis.unit == "km/s" and axis.kind == "velocity"

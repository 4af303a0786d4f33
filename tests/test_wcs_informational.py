"""Issue 11, finding 8: astropy's informational fixes ('obsfix', 'datfix') are not WCS warnings."""

from __future__ import annotations

import warnings

import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from app.io.wcs_info import analyse_wcs
from app.settings import DEMO_DATA_ROOT


def _header(**extra) -> fits.Header:
    header = fits.Header()
    for i, (ctype, cunit, crval, cdelt) in enumerate(
        [("RA---SIN", "deg", 230.5, -0.004), ("DEC--SIN", "deg", 5.0, 0.004), ("VRAD", "m/s", 1.0e5, -5.0e3)],
        start=1,
    ):
        header[f"CTYPE{i}"], header[f"CUNIT{i}"], header[f"CRVAL{i}"] = ctype, cunit, crval
        header[f"CDELT{i}"], header[f"CRPIX{i}"] = cdelt, 1.0
    for key, value in extra.items():
        header[key.replace("_", "-")] = value
    return header


def _astropy_fixes(header: fits.Header) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        WCS(header, fix=True)
    return [str(w.message) for w in caught if issubclass(w.category, FITSFixedWarning)]


@pytest.mark.parametrize("name", ["ngc5921_hi_cube.fits.gz", "3c273_continuum.fits.gz", "3c273_continuum_4d.fits.gz"])
def test_demo_files_open_without_warning(name: str) -> None:
    header = fits.getheader(DEMO_DATA_ROOT / name)
    shape = tuple(header[f"NAXIS{i}"] for i in range(1, header["NAXIS"] + 1))
    assert any("'obsfix'" in m for m in _astropy_fixes(header))  # astropy does report the fix
    info = analyse_wcs(header, shape)
    assert info.status == "ok"
    assert info.warning_message == ""
    assert any("'obsfix'" in m for m in info.info_messages)


def test_datfix_and_obsfix_only_is_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    header = _header(DATE_OBS="2020-01-01T00:00:00", OBSGEO_X=-1601185.4, OBSGEO_Y=-5041977.5,
                     OBSGEO_Z=3554875.9)
    # astropy reports both fixes for this header when built without ``naxis``; analyse_wcs builds
    # with ``naxis`` (datfix then stays silent), so replay astropy's own datfix text into it.
    fixes = _astropy_fixes(header)
    datfix = next(m for m in fixes if "'datfix'" in m)
    assert any("'obsfix'" in m for m in fixes)
    import app.io.wcs_info as wcs_info

    original = wcs_info._build

    def build_with_datfix(work, naxis):
        wcs, caught = original(work, naxis)
        record = warnings.WarningMessage(FITSFixedWarning(datfix), FITSFixedWarning, "astropy", 0)
        return wcs, [*caught, record]

    monkeypatch.setattr(wcs_info, "_build", build_with_datfix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = analyse_wcs(header, (10, 8, 6))
    assert (info.status, info.warning_message, info.sanitized_axes) == ("ok", "", [])
    assert [m[:9] for m in info.info_messages] == ["'obsfix' ", "'datfix' "]


def test_substantive_fix_still_sanitized_without_informational_noise() -> None:
    header = _header(DATE_OBS="2020-01-01T00:00:00")
    header["CUNIT3"] = "KM/S"
    info = analyse_wcs(header, (10, 8, 6))
    assert info.status == "sanitized"
    assert "KM/S" in info.warning_message
    assert "datfix" not in info.warning_message


def test_open_response_via_api(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(token="t", token_file=tmp_path / "tok", output_dir=tmp_path / "out", backend="cpu",
                        workers=1)
    with TestClient(create_app(settings)) as client:
        body = client.post("/v1/datasets/open", json={"path": "ngc5921_hi_cube.fits.gz"},
                           headers={"X-Visivo-Token": "t"}).json()
    assert body["valid"] is True
    assert body["wcs_status"] == "ok" and body["wcs_warning_message"] == ""
    assert "obsfix" in body["wcs_info_message"]

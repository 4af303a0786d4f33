"""WCS analysis: the real NGC 5921 cube and hand-made headers with the known traps."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from app.io.fits_reader import open_fits_image
from app.io.spectral import spectral_axis
from app.services.datasets import image_metadata
from app.settings import DEMO_DATA_ROOT


def _cube_header(ctype3: str = "VRAD", cunit3: str | None = "m/s", crval3: float = 1.0e5, cdelt3: float = -5.0e3):
    header = fits.Header()
    header["CTYPE1"], header["CUNIT1"], header["CRVAL1"], header["CDELT1"], header["CRPIX1"] = (
        "RA---SIN", "deg", 230.5, -0.004, 5.0)
    header["CTYPE2"], header["CUNIT2"], header["CRVAL2"], header["CDELT2"], header["CRPIX2"] = (
        "DEC--SIN", "deg", 5.0, 0.004, 5.0)
    header["CTYPE3"], header["CRVAL3"], header["CDELT3"], header["CRPIX3"] = ctype3, crval3, cdelt3, 1.0
    if cunit3 is not None:
        header["CUNIT3"] = cunit3
    header["BUNIT"] = "Jy/beam"
    return header


def _write_cube(path: Path, header: fits.Header, shape=(6, 8, 10)) -> Path:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def test_real_ngc5921_vrad_in_m_per_s(tmp_path: Path) -> None:
    image = open_fits_image(DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz")
    try:
        meta = image_metadata(image)
        axis = spectral_axis(image.wcs_info, 56)
    finally:
        image.close()
    assert meta["wcs_status"] == "ok" and meta["wcs_sanitized_axes"] == []
    assert meta["spectral_axis_unit"] == "m/s"
    assert axis.unit == "km/s" and axis.kind == "velocity"
    assert axis.coords[0] == pytest.approx(1613.144936336)
    assert axis.coords[1] - axis.coords[0] == pytest.approx(-5.152859875656)
    assert np.allclose(axis.widths, 5.152859875656)
    # 4-D: the Stokes axis is dropped, the cube is (56, 256, 256)
    assert image.source.shape == (56, 256, 256)


def test_4d_with_stokes_first_plane(tmp_path: Path) -> None:
    with gzip.open(DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz") as handle, fits.open(handle) as hdul:
        header = hdul[0].header.copy()
        data = hdul[0].data[:, 10:14, 100:110, 120:135].copy()
    stacked = np.concatenate([data, data * 2.0], axis=0)  # 2 Stokes planes
    header["NAXIS4"] = 2
    fits.PrimaryHDU(stacked, header).writeto(tmp_path / "two_stokes.fits")
    image = open_fits_image(tmp_path / "two_stokes.fits")
    try:
        assert image.source.shape == (4, 10, 15)
        np.testing.assert_array_equal(image.source.read(), data[0])
        assert any("not degenerate" in m for m in image.wcs_info.messages)
    finally:
        image.close()


@pytest.mark.parametrize("restfrq", [1.42040575e9, None])
def test_felo_hel_is_rewritten_and_reported(tmp_path: Path, restfrq: float | None) -> None:
    header = _cube_header("FELO-HEL", "m/s", 3.0e6, 2.0e4)
    if restfrq:
        header["RESTFRQ"] = restfrq
    path = _write_cube(tmp_path / "felo.fits", header)
    image = open_fits_image(path)
    try:
        meta = image_metadata(image)
        axis = spectral_axis(image.wcs_info, 6)
    finally:
        image.close()
    assert meta["wcs_status"] == "sanitized"
    assert "FELO-HEL" in meta["wcs_warning_message"] or "VOPT" in meta["wcs_warning_message"]
    assert meta["spectral_axis_type"] == "FELO-HEL"  # the header's own spelling is reported
    assert 2 in meta["wcs_sanitized_axes"]
    assert axis.unit == "km/s"
    assert axis.coords[0] == pytest.approx(3000.0, rel=1e-6)


def test_missing_cunit_means_si(tmp_path: Path) -> None:
    path = _write_cube(tmp_path / "nounit.fits", _cube_header("VRAD", None, 1.5e6, -5.0e3))
    image = open_fits_image(path)
    try:
        meta = image_metadata(image)
        axis = spectral_axis(image.wcs_info, 6)
    finally:
        image.close()
    assert meta["wcs_status"] == "sanitized"
    assert "assumed m/s" in meta["wcs_warning_message"]
    assert axis.coords[0] == pytest.approx(1500.0)  # m/s per the standard -> km/s
    assert axis.coords[1] - axis.coords[0] == pytest.approx(-5.0)


def test_uppercase_km_s_is_read_as_km_s(tmp_path: Path) -> None:
    path = _write_cube(tmp_path / "kms.fits", _cube_header("VRAD", "KM/S", 1500.0, -5.0))
    image = open_fits_image(path)
    try:
        meta = image_metadata(image)
        axis = spectral_axis(image.wcs_info, 6)
    finally:
        image.close()
    assert meta["wcs_status"] == "sanitized" and meta["wcs_sanitized_axes"] == [2]
    assert "KM/S" in meta["wcs_warning_message"]
    assert meta["cunit"][2] == "m/s" and meta["crval"][2] == pytest.approx(1.5e6)
    assert axis.coords[0] == pytest.approx(1500.0)


def test_spectral_axis_first(tmp_path: Path) -> None:
    header = fits.Header()
    header["CTYPE1"], header["CUNIT1"], header["CRVAL1"], header["CDELT1"], header["CRPIX1"] = (
        "FREQ", "Hz", 1.4e9, 1.0e5, 1.0)
    header["CTYPE2"], header["CUNIT2"], header["CRVAL2"], header["CDELT2"], header["CRPIX2"] = (
        "RA---SIN", "deg", 10.0, -0.01, 1.0)
    header["CTYPE3"], header["CUNIT3"], header["CRVAL3"], header["CDELT3"], header["CRPIX3"] = (
        "DEC--SIN", "deg", 20.0, 0.01, 1.0)
    data = np.random.default_rng(1).normal(size=(5, 7, 9)).astype(np.float32)  # (dec, ra, freq)
    fits.PrimaryHDU(data, header).writeto(tmp_path / "freqfirst.fits")
    image = open_fits_image(tmp_path / "freqfirst.fits")
    try:
        meta = image_metadata(image)
        cube = image.source.read()
        axis = spectral_axis(image.wcs_info, 9)
        vel = spectral_axis(image.wcs_info, 9, rest_freq_hz=1.4e9)
    finally:
        image.close()
    assert (meta["width"], meta["height"], meta["depth"]) == (7, 5, 9)
    assert meta["ctype"] == ["RA---SIN", "DEC--SIN", "FREQ"]
    assert cube.shape == (9, 5, 7)
    np.testing.assert_array_equal(cube, np.transpose(data, (2, 0, 1)))
    np.testing.assert_array_equal(image.source.read(z=slice(2, 4), y=slice(1, 3), x=slice(0, 7)),
                                  np.transpose(data, (2, 0, 1))[2:4, 1:3])
    assert axis.unit == "Hz" and axis.coords[1] - axis.coords[0] == pytest.approx(1.0e5)
    assert vel.unit == "km/s" and vel.coords[0] == pytest.approx(0.0)
    assert vel.coords[1] == pytest.approx(-299792.458 * 1.0e5 / 1.4e9)


def test_degraded_wcs_falls_back_to_linear(tmp_path: Path) -> None:
    header = _cube_header()
    header["CTYPE1"] = "RA---XYZ"  # unknown projection
    path = _write_cube(tmp_path / "broken.fits", header)
    image = open_fits_image(path)
    try:
        meta = image_metadata(image)
    finally:
        image.close()
    assert meta["wcs_status"] == "degraded"
    assert "linear" in meta["wcs_warning_message"]
    assert meta["crval"][0] == pytest.approx(230.5) and meta["depth"] == 6

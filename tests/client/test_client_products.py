"""Client products (moments, line width, PV, noise, baseline, stacking, isosurface) against the wire and NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from tests.client.conftest import CUBE
from tests.client.refs import cube_data, cube_header, cube_wcs, same_celestial, wire
from visivo_client import Client
from visivo_client.products import quiet_wcs

DV_KMS = 5.152859875656  # |CDELT3| of NGC 5921 in km/s


def test_moment0_map_wcs_units_history(client: Client, raw_for, live_server, tmp_path) -> None:
    ds = client.open(CUBE)
    hdu = ds.moment(0, channels=(5, 50))
    assert isinstance(hdu, fits.PrimaryHDU) and hdu.data.shape == (256, 256)
    answer = raw_for(client).post("/v1/products/moment", {"dataset_id": ds.dataset_id, "order": 0,
                                                          "channel_start": 5, "channel_end": 50, "save": True})
    np.testing.assert_array_equal(hdu.data.ravel(), wire(answer["data_base64"]))
    # independent: sum of I·|dv| over channels 5..50, NaN where every channel is blank
    reference = np.nansum(cube_data()[5:51].astype(np.float64), axis=0) * DV_KMS
    reference[np.isnan(cube_data()[5:51]).all(axis=0)] = np.nan
    np.testing.assert_allclose(hdu.data, reference, rtol=0, atol=1e-6 * np.nanmax(reference))
    assert hdu.header["BUNIT"] == "Jy/beam km/s"
    history = "\n".join(hdu.header["HISTORY"])
    assert "channels=5..50" in history and "ngc5921_hi_cube" in history
    assert (live_server.output_dir / hdu.meta["output_path"].split("/")[-1]).is_file()
    # the FITS file as saved, read back: its WCS is the cube's celestial WCS computed by astropy from the cube
    out = tmp_path / "m0.fits"
    hdu.writeto(out)
    same_celestial(quiet_wcs(fits.getheader(out)), cube_wcs().celestial)
    assert fits.getheader(out)["BMAJ"] == pytest.approx(cube_header()["BMAJ"])


def test_moment_casa_threshold_and_unsaved_header(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    hdu = ds.moment(1, channels=(5, 50), convention="casa", threshold=0.01, save=False)
    answer = raw_for(client).post("/v1/products/moment", {
        "dataset_id": ds.dataset_id, "order": 1, "channel_start": 5, "channel_end": 50, "convention": "casa",
        "threshold": 0.01})
    np.testing.assert_array_equal(hdu.data.ravel(), wire(answer["data_base64"]))
    assert hdu.header["BUNIT"] == answer["moment_unit"] == "km/s"
    same_celestial(quiet_wcs(hdu.header), cube_wcs().celestial)
    assert "convention=casa" in "\n".join(hdu.header["HISTORY"])
    # the velocities lie inside the integrated range
    finite = hdu.data[np.isfinite(hdu.data)]
    low, high = sorted(answer["spectral_range"])
    assert finite.size > 100 and low <= finite.min() and finite.max() <= high


def test_linewidth_maps_and_binary_route(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    fwhm = ds.linewidth(channels=(5, 50))
    ew = ds.linewidth(channels=(5, 50), map="ew")
    answer = raw_for(client).post("/v1/spectral/linewidth", {"dataset_id": ds.dataset_id, "channel_start": 5,
                                                            "channel_end": 50})
    np.testing.assert_array_equal(fwhm.data.ravel(), wire(answer["fwhm_base64"]))
    np.testing.assert_array_equal(ew.data.ravel(), wire(answer["ew_base64"]))
    assert fwhm.header["BUNIT"] == "km/s" and np.isfinite(fwhm.data).sum() == answer["fwhm_valid_pixels"]
    same_celestial(quiet_wcs(fwhm.header), cube_wcs().celestial)
    frames = ds.linewidth_frames(channels=(5, 50))
    np.testing.assert_array_equal(frames["fwhm"], fwhm.data)
    np.testing.assert_array_equal(frames["ew"], ew.data)


def test_pv_axes_in_arcsec_and_kms(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    # a horizontal one-pixel-wide cut through integer pixels samples the cube's pixels themselves
    hdu = ds.pv([(100, 128), (150, 128)], width=1)
    assert hdu.data.shape == (56, 51)
    np.testing.assert_allclose(hdu.data, cube_data()[:, 128, 100:151], rtol=1e-6, equal_nan=True)
    h = hdu.header
    wcs = cube_wcs()
    assert (h["CTYPE1"], h["CUNIT1"], h["CTYPE2"], h["CUNIT2"]) == ("OFFSET", "arcsec", "VRAD", "km/s")
    assert h["CDELT1"] == pytest.approx(abs(wcs.wcs.cdelt[0]) * 3600, rel=1e-9)  # 1 px = 15 arcsec
    assert h["CRVAL2"] == pytest.approx(wcs.wcs.crval[2] / 1000, rel=1e-12)
    assert h["CDELT2"] == pytest.approx(wcs.wcs.cdelt[2] / 1000, rel=1e-9)
    diagonal = ds.pv([(60, 60), (200, 200)], width=3)
    answer = raw_for(client).post("/v1/cube/pv", {"dataset_id": ds.dataset_id, "vertices": [[60, 60], [200, 200]],
                                                  "width_pixels": 3})
    np.testing.assert_array_equal(diagonal.data.ravel(), wire(answer["data_base64"]))
    ns = diagonal.header["NAXIS1"]
    assert diagonal.header["CDELT1"] * (ns - 1) == pytest.approx(140 * np.sqrt(2) * 15, rel=1e-6)


def test_noise_table(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    table = ds.noise(channels=(0, 3), x=(0, 127), y=(0, 255))
    answer = raw_for(client).post("/v1/cube/noise", {"dataset_id": ds.dataset_id, "channel_start": 0,
                                                     "channel_end": 3, "x0": 0, "x1": 127, "y0": 0, "y1": 255})
    np.testing.assert_array_equal(table["sigma"], answer["sigma"])
    plane = cube_data()[2, :, :128].astype(np.float64)
    plane = plane[np.isfinite(plane)]
    mad = np.median(np.abs(plane - np.median(plane)))
    assert list(table["channel"]) == [0, 1, 2, 3] and str(table["mad"].unit) == "Jy / beam"
    assert table["mad"][2] == pytest.approx(mad, rel=1e-5)
    assert table["sigma"][2] == pytest.approx(1.4826 * mad, rel=1e-5)


def test_baseline_then_stack(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    new = ds.baseline([(0, 4), (51, 55)], order=1)
    info = new.info["baseline"]
    assert new.shape == ds.shape and new.dataset_id == info["new_dataset_id"] != ds.dataset_id
    assert info["fit_channels"] == [0, 1, 2, 3, 4, 51, 52, 53, 54, 55]
    written = np.asarray(fits.getdata(info["output_path"]), dtype=np.float32).reshape(ds.shape)
    np.testing.assert_array_equal(new.slice(30), written[30])
    # independent: a straight line fitted to the line-free channels of one spectrum, subtracted
    channels = np.array(info["fit_channels"])
    spectrum = cube_data()[:, 128, 128].astype(np.float64)
    line = np.polyval(np.polyfit(channels, spectrum[channels], 1), np.arange(56))
    np.testing.assert_allclose(written[:, 128, 128], spectrum - line, rtol=0, atol=2e-6)
    stacked = client.stack([ds, new], method="mean")
    answer = raw_for(client).post("/v1/spectral/stack", {"dataset_ids": [ds.dataset_id, new.dataset_id]})
    np.testing.assert_array_equal(stacked["flux"], wire(answer["data_base64"]))
    mean_spectra = [np.nanmean(c.astype(np.float64), axis=(1, 2)) for c in (cube_data(), written)]
    np.testing.assert_allclose(stacked["flux"], np.mean(mean_spectra, axis=0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(stacked["spectral"], ds.spectral_axis().value, rtol=1e-12)
    assert str(stacked["spectral"].unit) == "km / s" and stacked.meta["n_cubes"] == 2


def test_isosurface_vertices_lie_on_the_threshold(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    threshold = 0.03
    mesh = ds.isosurface(threshold)
    answer = raw_for(client).post("/v1/products/isosurface", {"dataset_id": ds.dataset_id, "threshold": threshold})
    np.testing.assert_array_equal(mesh.points.ravel(), wire(answer["points_base64"]))
    assert mesh.triangles.shape == (answer["num_polys"], 3) and mesh.triangles.max() < len(mesh.points)
    # every vertex sits on a voxel edge where linear interpolation of the cube equals the threshold
    data = cube_data()
    for x, y, z in mesh.points[:: max(1, len(mesh.points) // 50)].astype(np.float64):
        position = np.array([z, y, x])
        axis = int(np.argmax(np.abs(position - np.round(position))))
        low = np.round(position).astype(int)
        low[axis] = int(np.floor(position[axis]))
        high = low.copy()
        high[axis] += 1
        v0, v1 = float(data[tuple(low)]), float(data[tuple(high)])
        frac = position[axis] - low[axis]
        assert v0 + (v1 - v0) * frac == pytest.approx(threshold, abs=1e-6)

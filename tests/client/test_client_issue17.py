"""Issue 17 in the client and the CLI against the live server: several moments with σ maps, PV channel range and
binning, region spectra / statistics / noise (text and region files); numbers against the wire and NumPy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from astropy.io import fits
from regions import CirclePixelRegion, PixCoord, RectanglePixelRegion

from tests.client.conftest import CUBE
from tests.client.refs import cube_data, cube_wcs, same_celestial, wire
from visivo_client import Client, VisivoError
from visivo_client.cli import main
from visivo_client.products import quiet_wcs

DV_KMS = 5.152859875656  # |CDELT3| of NGC 5921 in km/s
NY = NX = 256
#: Two regions in DS9 image (1-based) pixels, and the same 0-based with astropy-regions.
DS9 = "# Region file format: DS9\nimage\ncircle(129,129,12)\nbox(100,150,20,10,0)\n"
REFS = [CirclePixelRegion(PixCoord(128, 128), 12), RectanglePixelRegion(PixCoord(99, 149), 20, 10)]


def _mask(ref) -> np.ndarray:  # noqa: ANN001
    return ref.to_mask(mode="center").to_image((NY, NX)).astype(bool)


def test_moments_with_sigma_maps(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    hdul = ds.moments([0, 1, 2, 8], channels=(5, 50), uncertainty=True, rms=0.003, threshold=0.01)
    assert [h.name for h in hdul[1:]] == ["MOM0", "SIG0", "MOM1", "SIG1", "MOM2", "SIG2", "MOM8"]
    answer = raw_for(client).post("/v1/products/moment", {
        "dataset_id": ds.dataset_id, "orders": [0, 1, 2, 8], "channel_start": 5, "channel_end": 50,
        "uncertainty": True, "rms": 0.003, "threshold": 0.01})
    for entry in answer["maps"]:
        k = entry["order"]
        np.testing.assert_array_equal(hdul[f"MOM{k}"].data.ravel(), wire(entry["data_base64"]))
        assert hdul[f"MOM{k}"].header["BUNIT"] == entry["moment_unit"]
        same_celestial(quiet_wcs(hdul[f"MOM{k}"].header), cube_wcs().celestial)
        if k != 8:
            np.testing.assert_array_equal(hdul[f"SIG{k}"].data.ravel(), wire(entry["sigma_base64"]))
    # independent: σ_M0 = |Δv|·rms·√N over the kept voxels (finite, ≥ threshold)
    cube = cube_data()[5:51]
    n = (np.isfinite(cube) & (cube >= 0.01)).sum(axis=0)
    sig0, mom0 = hdul["SIG0"].data, hdul["MOM0"].data
    fin = np.isfinite(mom0)
    assert fin.sum() > 300
    np.testing.assert_allclose(sig0[fin], DV_KMS * 0.003 * np.sqrt(n[fin]), rtol=1e-5)
    assert hdul.meta["noise_source"] == "request" and hdul.meta["noise_per_channel"] == [0.003] * 46
    # the single-order request gives the same map, and its σ map in meta
    one = ds.moment(1, channels=(5, 50), uncertainty=True, rms=0.003, threshold=0.01, save=False)
    np.testing.assert_array_equal(one.data, hdul["MOM1"].data)
    np.testing.assert_array_equal(one.meta["sigma"], hdul["SIG1"].data)


def test_pv_channel_range_and_binning(client: Client) -> None:
    ds = client.open(CUBE)
    hdu = ds.pv([(100, 128), (150, 128)], width=1, channels=(10, 40), spatial_bin=5, spectral_bin=4)
    plain = cube_data()[10:41, 128, 100:151].astype(np.float64)  # 31 channels × 51 samples
    rows, cols = math.ceil(31 / 4), math.ceil(51 / 5)
    assert hdu.data.shape == (rows, cols)
    expected = np.full((rows, cols), np.nan)
    for i in range(rows):
        for j in range(cols):
            block = plain[4 * i:4 * i + 4, 5 * j:5 * j + 5]
            if np.isfinite(block).any():
                expected[i, j] = np.nanmean(block)
    np.testing.assert_allclose(hdu.data, expected, rtol=1e-5, atol=1e-7, equal_nan=True)
    wcs = cube_wcs()
    v = (wcs.wcs.crval[2] + (np.arange(10, 41) + 1 - wcs.wcs.crpix[2]) * wcs.wcs.cdelt[2]) / 1000  # km/s
    assert hdu.header["CRVAL2"] == pytest.approx(v[:4].mean(), rel=1e-9)
    assert hdu.header["CDELT2"] == pytest.approx(4 * wcs.wcs.cdelt[2] / 1000, rel=1e-9)
    assert hdu.header["CDELT1"] == pytest.approx(5 * abs(wcs.wcs.cdelt[0]) * 3600, rel=1e-6)


def test_region_spectrum_stats_and_noise(client: Client) -> None:
    ds = client.open(CUBE)
    cube = cube_data()
    spectra = ds.region_spectrum(DS9, channels=(5, 50))
    stats = ds.region_stats(DS9, channels=(5, 50))
    noise = ds.region_noise(DS9, channels=(0, 4))
    assert len(spectra) == len(noise) == len(stats) == 2
    assert list(stats["shape"]) == ["circle", "rectangle"]
    for i, ref in enumerate(REFS):
        mask = _mask(ref)
        values = cube[5:51][:, mask].astype(np.float64)
        spec = spectra[i]
        assert spec.meta["num_pixels"] == int(mask.sum()) == stats["num_pixels"][i]
        np.testing.assert_allclose(spec["sum"], np.nansum(values, axis=1), rtol=1e-6, atol=1e-7)
        assert list(spec["channel"]) == list(range(5, 51)) and str(spec["spectral"].unit) == "km / s"
        x = values[np.isfinite(values)]
        assert stats["npts"][i] == x.size
        assert stats["mean"][i] == pytest.approx(x.mean(), rel=1e-9)
        assert stats["sigma"][i] == pytest.approx(x.std(ddof=1), rel=1e-9)
        assert stats["median"][i] == pytest.approx(np.median(x), rel=1e-7)
        assert stats["max"][i] == pytest.approx(x.max(), rel=1e-7)
        z, y, xx = np.unravel_index(np.nanargmax(np.where(mask[None], cube[5:51], -np.inf)), cube[5:51].shape)
        assert list(stats["maxpos"][i]) == [xx, y, z + 5]
        planes = cube[0:5][:, mask].astype(np.float64)
        for c, row in enumerate(planes):
            row = row[np.isfinite(row)]
            mad = np.median(np.abs(row - np.median(row)))
            assert noise[i]["mad"][c] == pytest.approx(mad, rel=1e-9)
            assert noise[i]["sigma"][c] == pytest.approx(1.4826 * mad, rel=1e-4)


def test_region_file_and_errors(client: Client, live_server) -> None:
    ds = client.open(CUBE)
    path = live_server.output_dir / "two_regions.reg"  # the output directory is a readable root
    path.write_text(DS9)
    from_file = ds.region_stats(region_file=str(path), channels=(5, 50))
    from_text = ds.region_stats(DS9, channels=(5, 50))
    assert list(from_file["mean"]) == list(from_text["mean"])
    with pytest.raises(VisivoError, match="covers no pixel"):
        ds.region_spectrum("image\ncircle(900,900,3)")
    with pytest.raises(VisivoError, match="not found"):
        ds.region_stats(region_file="/etc/passwd")
    with pytest.raises(ValueError, match="either"):
        ds.region_noise()


def test_cli_moments_pv_and_regions(client: Client, live_server, tmp_path, capsys) -> None:
    def visivo(*args: str) -> tuple[int, str, str]:
        code = main([*args, "--url", live_server.url, "--token", live_server.token])
        out = capsys.readouterr()
        return code, out.out, out.err

    out = tmp_path / "moms.fits"
    code, text, err = visivo("moment", CUBE, "--orders", "0,1,8", "--channels", "5:50", "--uncertainty", "--rms",
                             "0.003", "--threshold", "0.01", "-o", str(out))
    assert code == 0, err
    with fits.open(out) as hdul:
        assert [h.name for h in hdul[1:]] == ["MOM0", "SIG0", "MOM1", "SIG1", "MOM8"]
        reference = client.open(CUBE).moments([0, 1, 8], channels=(5, 50), uncertainty=True, rms=0.003,
                                              threshold=0.01)
        for name in ("MOM0", "SIG1", "MOM8"):
            np.testing.assert_array_equal(hdul[name].data, reference[name].data)
    assert "SIG0" in text and "written to" in text
    pv_out = tmp_path / "pv.fits"
    code, _, err = visivo("pv", CUBE, "--path", "100,128:150,128", "--width", "1", "--channels", "10:40",
                          "--spectral-bin", "4", "--spatial-bin", "5", "-o", str(pv_out))
    assert code == 0, err
    assert fits.getdata(pv_out).shape == (8, 11)
    code, text, _ = visivo("region-stats", CUBE, "--regions", DS9.replace("\n", "\\n"), "--channels", "5:50",
                           "--json")
    assert code == 0
    rows = json.loads(text)
    table = client.open(CUBE).region_stats(DS9, channels=(5, 50))
    assert [r["npts"] for r in rows] == list(table["npts"]) and rows[0]["mean"] == pytest.approx(table["mean"][0])
    code, text, _ = visivo("region-spectrum", CUBE, "--regions", DS9.replace("\n", "\\n"))
    assert code == 0 and "region 0 circle" in text and "region 1 rectangle" in text
    with pytest.raises(SystemExit) as usage:  # usage errors exit 2 through argparse
        visivo("region-stats", CUBE)
    assert usage.value.code == 2 and "--regions" in capsys.readouterr().err

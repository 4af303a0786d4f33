"""The client's noise-aware masks and line-fit maps against the live server: the same numbers as the wire,
and the masked moment 0 against NumPy over the mask the server returns."""

from __future__ import annotations

import numpy as np

from tests.client.conftest import CUBE
from tests.client.refs import cube_data, wire
from visivo_client import Client

DV_KMS = 5.152859875656  # |CDELT3| of NGC 5921 in km/s
NY = NX = 256
MASK = {"method": "smooth_and_clip", "snr": 4.0, "spatial_smooth_beams": 1.0, "spectral_smooth_channels": 3,
        "dilate_channels": 1}


def test_masked_moment_zero_against_numpy(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    hdu = ds.moment(0, channels=(5, 50), mask=MASK, save=False)
    answer = raw_for(client).post("/v1/products/moment", {
        "dataset_id": ds.dataset_id, "order": 0, "channel_start": 5, "channel_end": 50, "mask": MASK,
        "return_mask": True})
    np.testing.assert_array_equal(hdu.data.ravel(), wire(answer["data_base64"]))
    info = answer["masks"][0]
    assert hdu.meta["masks"][0]["voxels"] == info["voxels"] > 0
    keep = wire(info["data_base64"], dtype="u1").reshape(info["shape"]).astype(bool)
    assert keep.shape == (46, NY, NX)
    cube = cube_data()[5:51]
    kept = keep & np.isfinite(cube)
    touched = kept.any(axis=0)
    assert 100 < touched.sum() < NY * NX // 2
    expected = (np.where(kept, cube, 0.0).astype(np.float64) * DV_KMS).sum(axis=0)
    np.testing.assert_allclose(hdu.data[touched], expected[touched], rtol=1e-5, atol=1e-7)
    assert np.isnan(hdu.data[~touched]).all() or np.allclose(hdu.data[~touched & np.isfinite(hdu.data)], 0.0)
    unmasked = ds.moment(0, channels=(5, 50), save=False)
    assert not np.array_equal(np.nan_to_num(unmasked.data), np.nan_to_num(hdu.data))


def test_linefit_hdulist_matches_wire_and_linewidth(client: Client, raw_for) -> None:
    ds = client.open(CUBE)
    hdul = ds.linefit(channels=(5, 50))
    names = [(h.name, h.header["EXTVER"]) for h in hdul[1:]]
    for name in ("AMPLITUDE", "CENTRE", "SIGMA", "AMPLITUDE_ERR", "CENTRE_ERR", "SIGMA_ERR", "REDUCED_CHI2"):
        assert (name, 1) in names
    answer = raw_for(client).post("/v1/spectral/linefit", {"dataset_id": ds.dataset_id, "channel_start": 5,
                                                           "channel_end": 50})
    for name, entry in answer["maps"].items():
        np.testing.assert_array_equal(hdul[name.upper(), 1].data.ravel(), wire(entry["data_base64"])[:NY * NX])
        assert hdul[name.upper(), 1].header["BUNIT"] == entry["unit"]
    fwhm = ds.linewidth(channels=(5, 50)).data
    sigma = hdul["SIGMA", 1].data
    assert np.array_equal(np.isfinite(fwhm), np.isfinite(sigma)) and np.isfinite(sigma).sum() > 100
    fin = np.isfinite(sigma)
    np.testing.assert_allclose(2.0 * np.sqrt(2.0 * np.log(2.0)) * sigma[fin], fwhm[fin], rtol=1e-5)
    assert np.all(hdul["SIGMA_ERR", 1].data[fin] > 0)


def test_masked_stack_matches_wire(client: Client, raw_for) -> None:
    a, b = client.open(CUBE), client.open(CUBE)
    table = client.stack([a, b], mask=MASK)
    answer = raw_for(client).post("/v1/spectral/stack", {"dataset_ids": [a.dataset_id, b.dataset_id],
                                                        "method": "mean", "mask": MASK})
    flux = wire(answer["data_base64"])
    assert answer["valid"] is True and len(table) == flux.size == 56  # NGC 5921's channels
    np.testing.assert_array_equal(np.asarray(table["flux"]), flux)
    assert [m["voxels"] for m in table.meta["masks"]] == [m["voxels"] for m in answer["masks"]]
    plain = client.stack([a, b])
    assert not np.allclose(np.asarray(plain["flux"], dtype=float), np.asarray(table["flux"], dtype=float),
                           equal_nan=True)

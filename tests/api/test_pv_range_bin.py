"""PV over a channel range and with spatial/spectral binning (issue 17 item 3), against hand-made cuts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.services.pv_binning import bin_mean
from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 20, 8, 12
V0, DV = 100.0, -5.0  # km/s


@pytest.fixture
def ramp(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray]:
    """I(z, y, x) = 100 z + x + 0.01 y with a few blank voxels on row 4."""
    z, y, x = np.mgrid[:NZ, :NY, :NX]
    cube = (100.0 * z + x + 0.01 * y).astype(np.float32)
    cube[6, 4, 3] = np.nan
    cube[7, 4, 3] = np.nan
    cube[8, 4, 3] = np.nan  # a whole 3-channel bin blank at x = 3
    cube[12, 4, 9] = np.nan
    path = write_cube(data_dir / "ramp.fits", cube, crval3=V0 * 1e3, cdelt3=DV * 1e3)
    body = open_dataset(client, path)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, cube


def _pv(client: TestClient, headers: dict, **req) -> dict:
    body = client.post("/v1/cube/pv", json={"vertices": [[2, 4], [10, 4]], "width_pixels": 1, **req},
                       headers=headers).json()
    assert body["valid"], body
    return body


def test_channel_range_is_the_hand_cut(client, ramp) -> None:  # noqa: ANN001
    ds, headers, cube = ramp
    res = _pv(client, headers, dataset_id=ds, channel_start=5, channel_end=14)
    assert (res["rows"], res["cols"], res["channel_start"], res["channel_end"]) == (10, 9, 5, 14)
    np.testing.assert_array_equal(decode(res, shape=(10, 9)), cube[5:15, 4, 2:11])
    np.testing.assert_allclose(res["spectral_values"], V0 + DV * np.arange(5, 15))
    whole = _pv(client, headers, dataset_id=ds)
    assert (whole["rows"], whole["channel_start"], whole["channel_end"]) == (NZ, 0, NZ - 1)
    clamped = _pv(client, headers, dataset_id=ds, channel_start=15, channel_end=500)
    assert (clamped["rows"], clamped["channel_end"]) == (5, NZ - 1)


def test_binning_is_the_mean_of_finite_values(client, ramp) -> None:  # noqa: ANN001
    ds, headers, cube = ramp
    res = _pv(client, headers, dataset_id=ds, channel_start=5, channel_end=14, spectral_bin=3, spatial_bin=4)
    # rows: channels [5,6,7], [8,9,10], [11,12,13], [14]; columns: x [2..5], [6..9], [10]
    rows = [(5, 8), (8, 11), (11, 14), (14, 15)]
    cols = [(2, 6), (6, 10), (10, 11)]
    expected = np.full((4, 3), np.nan)
    for i, (za, zb) in enumerate(rows):
        for j, (xa, xb) in enumerate(cols):
            block = cube[za:zb, 4, xa:xb].astype(np.float64)
            expected[i, j] = block[np.isfinite(block)].mean()
    assert (res["rows"], res["cols"], res["spectral_bin"], res["spatial_bin"]) == (4, 3, 3, 4)
    np.testing.assert_allclose(decode(res, shape=(4, 3)), expected, rtol=1e-6)
    np.testing.assert_allclose(res["spectral_values"], [V0 + DV * np.mean(range(a, b)) for a, b in rows])
    np.testing.assert_allclose(decode(res, "positions_base64"), [1.5, 5.5, 8.0])
    assert res["valid_samples"] == 12 and res["num_samples"] == 3
    # a bin with no finite value is blank: channels 6-8 at x = 3 alone
    one = _pv(client, headers, dataset_id=ds, vertices=[[3, 4], [4, 4]], channel_start=6, channel_end=11,
              spectral_bin=3)
    data = decode(one, shape=(2, 2))
    assert np.isnan(data[0, 0]) and data[1, 0] == pytest.approx(np.mean(cube[9:12, 4, 3]), rel=1e-6)


def test_bin_mean_helper() -> None:
    a = np.array([[1.0, np.nan, 3.0, 4.0, 5.0]], dtype=np.float32)
    np.testing.assert_array_equal(bin_mean(a, (1, 2)), np.array([[1.0, 3.5, 5.0]], dtype=np.float32))
    b = np.array([[1.0, np.nan], [3.0, 8.0]])
    assert bin_mean(b, (2, 2))[0, 0] == 4.0  # (1 + 3 + 8) / 3, not the mean of the row means (3.5)
    assert bin_mean(a, (1, 1)) is a
    with pytest.raises(ValueError):
        bin_mean(a, (1, 0))


@pytest.mark.parametrize(("req", "status", "message"), [
    ({"channel_start": 9, "channel_end": 3}, 200, "Invalid channel range"),
    ({"spectral_bin": 0}, 422, "spectral_bin"),
    ({"spatial_bin": -2}, 422, "spatial_bin"),
])
def test_bad_ranges_and_bins(client, ramp, req, status, message) -> None:  # noqa: ANN001
    ds, headers, _ = ramp
    response = client.post("/v1/cube/pv", json={"dataset_id": ds, "vertices": [[2, 4], [10, 4]], **req},
                           headers=headers)
    assert response.status_code == status and message in response.text

"""Several moment orders per request (issue 17 item 1): bit-identical to single-order answers,
one multi-extension FITS, cached and available as a task."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from fastapi.testclient import TestClient

from app.services.moment_multi import kernel_groups
from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 48, 9, 11


@pytest.fixture
def noisy(client: TestClient, data_dir: Path) -> tuple[str, dict]:
    """Gaussian lines on noise with blank voxels, a blank spectrum and an infinite voxel."""
    rng = np.random.default_rng(17)
    z = np.arange(NZ)[:, None, None]
    yy, xx = np.mgrid[:NY, :NX]
    cube = 3.0 * np.exp(-0.5 * ((z - 20.0 - 0.5 * xx) / (3.0 + 0.3 * yy)) ** 2) + rng.normal(0, 0.2, (NZ, NY, NX))
    cube = cube.astype(np.float32)
    cube[rng.random(cube.shape) < 0.03] = np.nan
    cube[:, 2, 3] = np.nan
    cube[10, 4, 4] = np.inf
    path = write_cube(data_dir / "noisy.fits", cube)
    body = open_dataset(client, path)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}


def _post(client: TestClient, headers: dict, **req) -> dict:
    body = client.post("/v1/products/moment", json=req, headers=headers).json()
    assert body["valid"], body
    return body


@pytest.mark.parametrize(("orders", "extra"), [
    ([0, 1, 2, 8], {}),
    ([0, 6], {}),
    ([6, 1, 10, 3, 4, 5], {}),
    ([8, 0, 2], {"threshold": 0.5}),
    ([0, 1, 2, 6, 8, 10], {"threshold": -0.1, "channel_start": 4, "channel_end": 40}),
    ([-1, 0, 1, 2, 5, 6, 8, 9, 10, 11], {"convention": "casa"}),
    ([0, 1, 2, 4], {"convention": "casa", "includepix": [0.3, 100.0]}),
])
def test_multi_order_maps_equal_single_order_bit_for_bit(client, noisy, orders, extra) -> None:  # noqa: ANN001
    ds, headers = noisy
    multi = _post(client, headers, dataset_id=ds, orders=orders, **extra)
    assert multi["orders"] == orders and [m["order"] for m in multi["maps"]] == orders
    assert multi["order"] == orders[0] and multi["data_base64"] == multi["maps"][0]["data_base64"]
    for entry in multi["maps"]:
        single = _post(client, headers, dataset_id=ds, order=entry["order"], **extra)
        assert "maps" not in single or single["maps"] is None
        assert entry["data_base64"] == single["data_base64"], entry["order"]  # same bytes
        assert entry["moment_unit"] == single["moment_unit"] and entry["moment_name"] == single["moment_name"]
        for key in ("range_min", "range_max"):
            assert entry[key] == single[key] or (entry[key] is None and single[key] is None)
        assert entry["sigma_base64"] is None


def test_kernel_groups_split_float32_orders_on_cpu_only() -> None:
    assert kernel_groups((0, 1, 2, 8), "reference", False) == [(0,), (1, 2, 8)]
    assert kernel_groups((0, 8, 10), "reference", False) == [(0, 8, 10)]
    assert kernel_groups((0, 6), "reference", False) == [(0,), (6,)]
    assert kernel_groups((0, 1, 2, 8), "reference", True) == [(0, 1, 2, 8)]
    assert kernel_groups((-1, 0, 2), "casa", False) == [(-1, 0, 2)]


def test_multi_order_fits_has_one_extension_per_order(client, noisy, settings) -> None:  # noqa: ANN001
    ds, headers = noisy
    body = _post(client, headers, dataset_id=ds, orders=[0, 1, 2, 8], save=True, channel_start=2, channel_end=45)
    path = Path(body["output_path"])
    assert path.parent == settings.output_dir and path.name.endswith(".fits")
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MOM0", "MOM1", "MOM2", "MOM8"]
        assert hdul[0].data is None and "orders=[0, 1, 2, 8]" in str(hdul[0].header["HISTORY"])
        for hdu, entry in zip(hdul[1:], body["maps"], strict=True):
            assert hdu.header["BUNIT"] == entry["moment_unit"]
            assert WCS(hdu.header).naxis == 2 and WCS(hdu.header).celestial.naxis == 2
            history = str(hdu.header["HISTORY"])
            assert f"order={entry['order']}" in history and "channels=2..45" in history
            np.testing.assert_array_equal(hdu.data.astype(np.float32), decode(entry, shape=(NY, NX)))
    assert [e["moment_unit"] for e in body["maps"]] == ["Jy/beam km/s", "km/s", "km^2/s^2", "Jy/beam"]


def test_multi_order_cached_and_as_task(client, noisy) -> None:  # noqa: ANN001
    ds, headers = noisy
    req = {"dataset_id": ds, "orders": [1, 0]}
    task = client.post("/v1/tasks/moment", json=req, headers=headers).json()
    deadline, status = time.time() + 30, {}
    while time.time() < deadline:
        status = client.get(f"/v1/tasks/{task['task_id']}").json()
        if status["status"] in ("done", "error"):
            break
        time.sleep(0.02)
    assert status["status"] == "done" and status["result"]["orders"] == [1, 0]
    again = _post(client, headers, **req)
    assert again["cache_hit"] is True and again["maps"] == status["result"]["maps"]


@pytest.mark.parametrize(("req", "message"), [
    ({"order": 0, "orders": [1]}, "not both"),
    ({"orders": []}, "at least one"),
    ({"orders": [0, 7]}, "Unsupported moment order 7"),
    ({"orders": [8], "uncertainty": True}, "uncertainty needs order 0, 1 or 2"),
])
def test_bad_orders_are_clear_errors(client, noisy, req, message) -> None:  # noqa: ANN001
    ds, headers = noisy
    response = client.post("/v1/products/moment", json={"dataset_id": ds, **req}, headers=headers)
    assert response.status_code == 200 and response.json()["valid"] is False
    assert message in response.json()["error"]

"""The σ request on the compiled CPU path (issue 17): its maps are the fast path's, its σ maps the oracle's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpu_fallback.moment_errors import moment_sigma_maps
from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 36, 20, 22
V0, DV = 300.0, 5.0  # km/s


@pytest.fixture
def cube_ds(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray]:
    rng = np.random.default_rng(9)
    v = V0 + DV * np.arange(NZ)
    centre = 360.0 + 20.0 * np.sin(np.arange(NX) / 4.0)
    cube = 1.5 * np.exp(-0.5 * ((v[:, None, None] - centre[None, None, :]) / 15.0) ** 2) + rng.normal(
        0, 0.05, (NZ, NY, NX))
    cube[rng.random(cube.shape) < 0.02] = np.nan
    cube = cube.astype(np.float32)
    body = open_dataset(client, write_cube(data_dir / "fast.fits", cube, crval3=V0 * 1e3, cdelt3=DV * 1e3))
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, cube


def _maps(client: TestClient, ds: str, headers: dict, **body) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    answer = client.post("/v1/products/moment", headers=headers, json={"dataset_id": ds, **body}).json()
    assert answer["valid"], answer
    return {m["order"]: (decode(m, shape=(NY, NX)),
                         decode(m, "sigma_base64", (NY, NX)) if m["sigma_base64"] else None) for m in answer["maps"]}


@pytest.mark.parametrize("convention", ["reference", "casa"])
def test_sigma_request_maps_equal_plain_request(client, cube_ds, convention: str) -> None:  # noqa: ANN001
    ds, headers, cube = cube_ds
    extra = {"threshold": 0.2} if convention == "reference" else {"includepix": [0.2, 100.0]}  # wins over rms
    orders = [0, 1, 2, 8]
    with_sigma = _maps(client, ds, headers, orders=orders, uncertainty=True, rms=0.05, convention=convention, **extra)
    plain = _maps(client, ds, headers, orders=orders, convention=convention, **extra)
    v = V0 + DV * np.arange(NZ)
    sigma = moment_sigma_maps(cube, v, np.full(NZ, DV), 0.05, dispersion=convention == "casa",
                              **({"threshold": 0.2} if convention == "reference" else {"include": (0.2, 100.0)}))
    for k in orders:
        np.testing.assert_array_equal(with_sigma[k][0], plain[k][0])  # bit for bit
        if k == 8:
            assert with_sigma[k][1] is None
            continue
        got, finite = with_sigma[k][1], np.isfinite(with_sigma[k][0])
        assert finite.sum() > NY * NX // 2
        np.testing.assert_allclose(got[finite], sigma[k][finite], rtol=1e-6)
        assert np.isnan(got[~finite]).all()


def test_switch_off_gives_the_same_sigma(settings, data_dir: Path, cube_ds,  # noqa: ANN001
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from app.main import create_app
    from tests.api.conftest import TOKEN

    answers = []
    with TestClient(create_app(settings.model_copy(update={"product_cache_capacity": 0}))) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        opened = open_dataset(client, data_dir / "fast.fits")
        headers = {"X-Visivo-Session": opened["session_id"]}
        for compiled in ("1", "0"):
            monkeypatch.setenv("VISIVO_COMPILED", compiled)
            answers.append(_maps(client, opened["dataset_id"], headers, orders=[0, 1, 2], uncertainty=True, rms=0.05,
                                 threshold=0.1))
    fast, oracle = answers
    for k in (0, 1, 2):
        np.testing.assert_allclose(fast[k][0], oracle[k][0], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(fast[k][1], oracle[k][1], rtol=1e-6, equal_nan=True)

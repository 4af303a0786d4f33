"""Cosmology: the interpolation grid against astropy at many redshifts, nulls, errors and the routes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy import cosmology as ac
from fastapi.testclient import TestClient

from app.errors import InvalidRequest
from app.main import create_app
from app.services import cosmology
from app.settings import Settings

TOKEN = "cosmology-test-token"
Z = np.concatenate([[0.0], np.geomspace(1e-9, 1e-2, 40), np.linspace(0.01, 20.0, 400), [50.0, 100.0, 1089.0,
                                                                                        1199.9, 1500.0]])


@pytest.mark.parametrize("model", cosmology.MODELS)
def test_grid_matches_astropy(model: str) -> None:
    cosmo = getattr(ac, model)
    out = cosmology.batch(Z.tolist(), model_name=model, kinds=["luminosity", "angular_diameter"])
    expected = {
        "distances_Mpc": cosmo.comoving_distance(Z).value,
        "luminosity_distances_Mpc": cosmo.luminosity_distance(Z).value,
        "angular_diameter_distances_Mpc": cosmo.angular_diameter_distance(Z).value,
    }
    for key, ref in expected.items():
        got = out[key]
        assert got[0] == 0.0
        rel = np.abs(got[1:] / ref[1:] - 1.0)
        assert rel.max() <= 1e-6, (key, float(rel.max()), Z[1:][np.argmax(rel)])


def test_invalid_redshifts_are_nan_in_batch_and_errors_alone() -> None:
    out = cosmology.batch([0.5, -0.1, float("nan"), None, float("inf"), 1.0], model_name="Planck18")
    d = out["distances_Mpc"]
    assert np.isnan(d[[1, 2, 3, 4]]).all() and np.isfinite(d[[0, 5]]).all()
    assert out["invalid_count"] == 4 and out["model"] == "Planck18"
    with pytest.raises(InvalidRequest, match=">= 0"):
        cosmology.single(-1.0, model_name="Planck18")
    with pytest.raises(InvalidRequest, match="finite"):
        cosmology.single(float("nan"), model_name="Planck18")
    with pytest.raises(InvalidRequest, match="Planck18, Planck15, Planck13, WMAP9"):
        cosmology.single(1.0, model_name="LCDM-X")
    with pytest.raises(InvalidRequest, match="kind"):
        cosmology.kind_of("proper")
    single = cosmology.single(0.5, model_name="wmap9")
    assert single["distance_Mpc"] == pytest.approx(ac.WMAP9.comoving_distance(0.5).value, rel=1e-12)
    assert single["model"] == "WMAP9"


def test_million_redshifts_fast() -> None:
    z = np.random.default_rng(0).uniform(0, 10, 1_000_000)
    cosmology.batch([0.1], model_name="Planck15")  # build the grid
    t0 = time.perf_counter()
    out = cosmology.batch(z.tolist(), model_name="Planck15")
    elapsed = time.perf_counter() - t0
    assert out["distances_Mpc"].shape == (1_000_000,)
    assert elapsed < 3.0, elapsed
    sample = z[:2000]
    np.testing.assert_allclose(out["distances_Mpc"][:2000], ac.Planck15.comoving_distance(sample).value, rtol=1e-6)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(token=TOKEN, token_file=tmp_path / "token", output_dir=tmp_path / "out", backend="cpu",
                        workers=2, sesame_url="")
    with TestClient(create_app(settings)) as test_client:
        test_client.headers.update({"X-Visivo-Token": TOKEN})
        yield test_client


def test_routes(client: TestClient) -> None:
    res = client.post("/v1/cosmology/distance/batch",
                      json={"redshifts": [0.1, 0.5, -1, None, 1.0], "model": "Planck15"}).json()
    assert res["valid"] and res["model"] == "Planck15"
    ref = ac.Planck15.comoving_distance([0.1, 0.5, 1.0]).value
    d = res["distances_Mpc"]
    assert d[2] is None and d[3] is None
    np.testing.assert_allclose([d[0], d[1], d[4]], ref, rtol=1e-6)
    lum = client.post("/v1/cosmology/distance/batch",
                      json={"redshifts": [1.0], "model": "Planck13", "kind": "luminosity"}).json()
    assert lum["luminosity_distances_Mpc"][0] == pytest.approx(ac.Planck13.luminosity_distance(1.0).value, rel=1e-6)
    assert lum["distances_Mpc"][0] == pytest.approx(ac.Planck13.comoving_distance(1.0).value, rel=1e-6)
    one = client.post("/v1/cosmology/distance", json={"redshift": 0.5, "model": "Planck18"}).json()
    assert one["distance_Mpc"] == pytest.approx(ac.Planck18.comoving_distance(0.5).value, rel=1e-9)
    neg = client.post("/v1/cosmology/distance", json={"redshift": -0.5}).json()
    assert neg == {"valid": False, "error": "Redshift z must be >= 0"}
    bad = client.post("/v1/cosmology/distance/batch", json={"redshifts": [0.1], "model": "EdS"}).json()
    assert bad["valid"] is False and "WMAP9" in bad["error"]
    assert client.post("/v1/cosmology/distance", json={"redshift": 1}, headers={"X-Visivo-Token": "x"}).status_code \
        == 401

"""The moment and noise routes on the compiled CPU path: `kernel` says which, numbers equal the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cpu_fallback.casa_moments import casa_moment_maps
from cpu_fallback.compiled import runtime
from cpu_fallback.moments import moment_maps
from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 40, 9, 11


@pytest.fixture
def cube_ds(client: TestClient, data_dir: Path) -> tuple[str, dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    v = 100.0 - 5.0 * np.arange(NZ)  # km/s (CDELT3 = -5 km/s)
    yy, xx = np.mgrid[0:NY, 0:NX]
    cube = (1.5 * np.exp(-0.5 * ((v[:, None, None] - (20 + 3 * xx - 2 * yy)) / 15.0) ** 2)
            + rng.normal(0, 0.05, (NZ, NY, NX))).astype(np.float32)
    cube[:, 0, 0] = np.nan
    cube[rng.random(cube.shape) < 0.02] = np.nan
    path = write_cube(data_dir / "compiled.fits", cube, crval3=100.0e3, cdelt3=-5.0e3)
    body = open_dataset(client, path)
    return body["dataset_id"], {"X-Visivo-Session": body["session_id"]}, cube, v


def _post(client: TestClient, headers: dict, route: str, **req) -> dict:
    res = client.post(route, json=req, headers=headers)
    assert res.status_code == 200, res.text
    return res.json()


def test_moment_route_uses_numba_and_matches_the_oracle(client: TestClient, cube_ds) -> None:
    ds, headers, cube, v = cube_ds
    w = np.full(NZ, 5.0)
    for order in (0, 6, 8):
        body = _post(client, headers, "/v1/products/moment", dataset_id=ds, order=order, threshold=0.2)
        assert body["valid"] and body["kernel"] == "numba" and body["computed_on"] == "cpu"
        got = decode(body, shape=(NY, NX))
        want = moment_maps(cube, v, w, orders=[order], threshold=0.2)[order]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5, equal_nan=True)
    casa = _post(client, headers, "/v1/products/moment", dataset_id=ds, order=2, convention="casa",
                 includepix=[0.1, 10])
    assert casa["kernel"] == "numba"
    want = casa_moment_maps(cube, v, w, moments=[2], include=[0.1, 10])[2]
    np.testing.assert_allclose(decode(casa, shape=(NY, NX)), want, rtol=1e-6, equal_nan=True)
    for order, pix in ((3, None), (4, [0.1, 10])):  # the CASA medians are compiled too: equal to the oracle
        median = _post(client, headers, "/v1/products/moment", dataset_id=ds, order=order, convention="casa",
                       includepix=pix)
        assert median["valid"] and median["kernel"] == "numba"
        want = casa_moment_maps(cube, v, w, moments=[order], include=pix)[order]
        np.testing.assert_array_equal(decode(median, shape=(NY, NX)), want)


def test_switch_off_gives_the_numpy_oracle(client: TestClient, cube_ds, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, headers, cube, v = cube_ds
    monkeypatch.setenv("VISIVO_COMPILED", "0")
    body = _post(client, headers, "/v1/products/moment", dataset_id=ds, order=1)
    assert body["kernel"] == "numpy"
    noise = _post(client, headers, "/v1/cube/noise", dataset_id=ds)
    assert noise["kernel"] == "numpy"


def test_noise_route_uses_selection(client: TestClient, cube_ds) -> None:
    ds, headers, cube, _ = cube_ds
    body = _post(client, headers, "/v1/cube/noise", dataset_id=ds, x0=1, x1=9, y0=2, y1=8)
    assert body["valid"] and body["kernel"] == "select"
    region = cube[:, 2:9, 1:10]
    for z in (0, 17, NZ - 1):
        plane = region[z][np.isfinite(region[z])].astype(np.float64)
        assert body["mad"][z] == pytest.approx(np.median(np.abs(plane - np.median(plane))), rel=1e-12)


def test_thread_budget_per_heavy_job(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runtime._state, "threads", None)
    cores = runtime.cores()
    assert runtime.configure(None, 1) == cores
    assert runtime.configure(None, 2) == max(1, cores // 2)
    assert runtime.configure(10 * cores, 1) == cores  # never more than the cores
    assert runtime.configure(1, 4) == 1
    assert runtime.job_threads() == 1


def test_warm_up_compiles_every_case_and_reports(client: TestClient) -> None:
    seconds = runtime.warm_up()
    status = runtime.status()
    assert seconds > 0 and status["warm_seconds"] is not None and status["available"] is True
    assert status["cache_dir"] and Path(str(status["cache_dir"])).is_dir()


def test_background_warm_up_compiles_in_a_child_and_loads(client: TestClient) -> None:
    """build_runtime (the client fixture) started the warm-up thread: it ends without error."""
    thread = runtime.start_warm_up()
    if thread is None:
        pytest.skip("VISIVO_COMPILED_WARMUP=0")
    assert thread is runtime.start_warm_up()  # once per process
    thread.join(timeout=900)
    assert not thread.is_alive()
    assert runtime.status()["warm_error"] is None and runtime.status()["warm_seconds"] is not None

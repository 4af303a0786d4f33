"""Spectral routes end to end: line width, baseline subtraction, stacking, isosurface, tasks."""

from __future__ import annotations

import base64
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from tests.api.conftest import decode, open_dataset, write_cube

NZ, NY, NX = 96, 10, 14
DV = 2.0  # km/s: lines of sigma 8-13 km/s are well sampled


def _velocities() -> np.ndarray:
    return 100.0 - DV * np.arange(NZ)  # VRAD axis, decreasing, km/s


@pytest.fixture
def lines(client: TestClient, data_dir: Path):
    """Gaussian lines of known σ (km/s) + noise."""
    rng = np.random.default_rng(11)
    v = _velocities()
    yy, xx = np.mgrid[0:NY, 0:NX]
    sigma = 8.0 + 0.4 * xx
    centre = -10.0 + yy
    cube = 1.0 * np.exp(-0.5 * ((v[:, None, None] - centre) / sigma) ** 2) + rng.normal(0, 0.01, (NZ, NY, NX))
    cube = cube.astype(np.float32)
    cube[:, 0, 0] = 0.0  # no line: under the SNR cut
    path = write_cube(data_dir / "lines.fits", cube, crval3=100e3, cdelt3=-DV * 1e3)
    body = open_dataset(client, path)
    return body, {"X-Visivo-Session": body["session_id"]}, cube, sigma


def test_linewidth_json_binary_get(client: TestClient, lines) -> None:
    body, headers, cube, sigma = lines
    ds = body["dataset_id"]
    res = client.post("/v1/spectral/linewidth", json={"dataset_id": ds}, headers=headers).json()
    assert res["valid"] and res["fwhm_unit"] == "km/s" and res["ew_unit"] == "km/s" and res["chunks"] >= 1
    fwhm = decode(res, "fwhm_base64", (NY, NX))
    ew = decode(res, "ew_base64", (NY, NX))
    assert np.isnan(fwhm[0, 0]) and np.isnan(ew[0, 0])
    truth = 2.3548 * sigma
    rel = np.abs(fwhm - truth) / truth
    assert np.nanmax(rel[1:]) < 0.02  # SNR 100: every pixel within 2 %
    assert np.nanmedian(rel[1:]) < 0.005
    expected_ew = (cube[:, 1:].astype(np.float64).sum(axis=0) * DV) / cube[:, 1:].max(axis=0)
    np.testing.assert_allclose(ew[1:], expected_ew, rtol=1e-4)
    binary = client.post("/v1/spectral/linewidth/binary", json={"dataset_id": ds}, headers=headers)
    blob = binary.content
    w, h, n = struct.unpack("<iii", blob[:12])
    assert (w, h, n) == (NX, NY, NX * NY * 4)
    np.testing.assert_array_equal(np.frombuffer(blob[12:12 + n], "<f4").reshape(NY, NX), fwhm)
    w2, h2, n2 = struct.unpack("<iii", blob[12 + n:24 + n])
    np.testing.assert_array_equal(np.frombuffer(blob[24 + n:], "<f4").reshape(NY, NX), ew)
    one = client.post("/v1/spectral/linewidth/binary", json={"dataset_id": ds, "method": "fwhm"}, headers=headers)
    assert len(one.content) == 12 + NX * NY * 4
    last = client.get(f"/v1/spectral/linewidth/{ds}", headers=headers).json()
    assert last["valid"] and last["fwhm_base64"]
    assert client.post("/v1/spectral/linewidth", json={"dataset_id": ds, "method": "sigma"},
                       headers=headers).json()["valid"] is False


def test_linewidth_chunks_equal_whole(client: TestClient, lines) -> None:
    body, headers, _, _ = lines
    runtime = client.app.state.runtime
    runtime.settings.linewidth_chunks = 1
    whole = client.post("/v1/spectral/linewidth", json={"dataset_id": body["dataset_id"], "snr": 2.5},
                        headers=headers).json()
    runtime.settings.linewidth_chunks = 4
    chunked = client.post("/v1/spectral/linewidth", json={"dataset_id": body["dataset_id"], "snr": 2.4999},
                          headers=headers).json()
    assert chunked["chunks"] == 4 and whole["chunks"] == 1
    np.testing.assert_array_equal(decode(whole, "fwhm_base64"), decode(chunked, "fwhm_base64"))


def test_baseline_recovers_polynomial(client: TestClient, data_dir: Path, settings) -> None:
    rng = np.random.default_rng(2)
    z = np.arange(40, dtype=np.float64)
    a0, a1, a2 = rng.normal(0, 1, (3, 6, 8))
    base = a0 + a1 * (z[:, None, None] / 40) + a2 * (z[:, None, None] / 40) ** 2
    line = np.zeros_like(base)
    line[15:25] = 3.0
    cube = (base + line).astype(np.float32)
    body = open_dataset(client, write_cube(data_dir / "base.fits", cube))
    sid, ds = body["session_id"], body["dataset_id"]
    req = {"session_id": sid, "dataset_id": ds, "poly_order": 2, "method": "polynomial",
           "line_free_channels": [[0, 12], [28, 39]]}
    res = client.post(f"/v1/spectral/baseline/{sid}/{ds}", json=req).json()
    assert res["valid"], res
    assert res["fit_channels"] == list(range(0, 13)) + list(range(28, 40))
    assert res["rms_after"] < 1e-5 < res["rms_before"]
    out = Path(res["output_path"])
    assert out.parent == settings.output_dir and not list(settings.output_dir.glob(".*part"))
    data = fits.getdata(out).astype(np.float64)
    np.testing.assert_allclose(data, line, atol=2e-5)
    history = " ".join(str(h) for h in fits.getheader(out)["HISTORY"])
    assert "baseline" in history and "base.fits" in history
    # the new dataset works at once with moments
    m0 = client.post("/v1/products/moment", json={"dataset_id": res["new_dataset_id"], "order": 0},
                     headers={"X-Visivo-Session": sid}).json()
    assert m0["valid"] and m0["range_max"] == pytest.approx(3.0 * 10 * 5.0, rel=1e-3)
    # errors
    post = client.post
    few = post(f"/v1/spectral/baseline/{sid}/{ds}", json={**req, "line_free_channels": [1, 2, 3]}).json()
    assert few["valid"] is False and "Too few line-free channels" in few["error"]
    bad = post(f"/v1/spectral/baseline/{sid}/{ds}", json={**req, "line_free_channels": [[10, 5]]}).json()
    assert bad["valid"] is False
    outside = post(f"/v1/spectral/baseline/{sid}/{ds}", json={**req, "line_free_channels": [[30, 60]]}).json()
    assert "outside" in outside["error"]
    other = open_dataset(client, "3c273_continuum.fits.gz")["session_id"]
    assert post(f"/v1/spectral/baseline/{other}/{ds}", json=req).status_code == 404
    median = post(f"/v1/spectral/baseline/{sid}/{ds}", json={**req, "method": "median"}).json()
    assert median["valid"] and median["method"] == "median"


def _stack_cubes(client: TestClient, data_dir: Path):
    rng = np.random.default_rng(4)
    cubes = [rng.normal(k, 1.0, (12, 5, 6)).astype(np.float32) for k in range(3)]
    cubes[1][:, 0, 0] = np.nan
    sid = None
    ids = []
    for k, c in enumerate(cubes):
        body = open_dataset(client, write_cube(data_dir / f"s{k}.fits", c), session=sid)
        sid = body["session_id"]
        ids.append(body["dataset_id"])
    return ids, {"X-Visivo-Session": sid}, cubes


def test_stacking_methods_against_hand_computation(client: TestClient, data_dir: Path) -> None:
    ids, headers, cubes = _stack_cubes(client, data_dir)
    spectra = np.array([np.nanmean(c.astype(np.float64).reshape(12, -1), axis=1) for c in cubes])
    for method, expected in (("mean", spectra.mean(axis=0)), ("median", np.median(spectra, axis=0))):
        res = client.post("/v1/spectral/stack", json={"dataset_ids": ids, "method": method}, headers=headers).json()
        assert res["valid"] and res["rows"] == 1 and res["cols"] == 12 and res["n_cubes"] == 3
        np.testing.assert_allclose(decode(res), expected, rtol=1e-6)
    weights = [1.0, 2.0, 5.0]
    res = client.post("/v1/spectral/stack", json={"dataset_ids": ids, "method": "weighted_mean", "weights": weights},
                      headers=headers).json()
    np.testing.assert_allclose(decode(res), (spectra * np.array(weights)[:, None]).sum(0) / 8.0, rtol=1e-6)
    peaks = np.array([np.nanmax(c) for c in cubes], dtype=np.float64)
    res = client.post("/v1/spectral/stack", json={"dataset_ids": ids, "method": "weighted_mean",
                                                  "weight_by": "peak"}, headers=headers).json()
    np.testing.assert_allclose(decode(res), (spectra * peaks[:, None]).sum(0) / peaks.sum(), rtol=1e-5)
    mad = np.median(np.abs(spectra - np.median(spectra, axis=1, keepdims=True)), axis=1)
    w_rms = 1.0 / (1.4826 * mad) ** 2
    res = client.post("/v1/spectral/stack", json={"dataset_ids": ids, "method": "weighted_mean",
                                                  "weight_by": "rms"}, headers=headers).json()
    np.testing.assert_allclose(decode(res), (spectra * w_rms[:, None]).sum(0) / w_rms.sum(), rtol=1e-5)
    binary = client.post("/v1/spectral/stack/binary", json={"dataset_ids": ids}, headers=headers).content
    assert struct.unpack("<iii", binary[:12]) == (12, 1, 48)
    # errors
    assert "weights has 2 entries" in client.post(
        "/v1/spectral/stack", json={"dataset_ids": ids, "method": "weighted_mean", "weights": [1, 2]},
        headers=headers).json()["error"]
    assert client.post("/v1/spectral/stack", json={"dataset_ids": ids[:1]}, headers=headers).json()["valid"] is False


def test_stack_shape_mismatch_and_cube_mode(client: TestClient, data_dir: Path) -> None:
    ids, headers, cubes = _stack_cubes(client, data_dir)
    odd = open_dataset(client, write_cube(data_dir / "odd.fits", np.zeros((12, 5, 7), np.float32)),
                       session=headers["X-Visivo-Session"])
    res = client.post("/v1/spectral/stack", json={"dataset_ids": [ids[0], odd["dataset_id"]]}, headers=headers).json()
    assert res["valid"] is False and "Shape mismatch" in res["error"] and odd["dataset_id"] in res["error"]
    cube = client.post("/v1/spectral/stack", json={"dataset_ids": ids, "mode": "cube", "method": "median"},
                       headers=headers).json()
    assert cube["valid"] and cube["new_dataset_id"].startswith("ds_")
    data = fits.getdata(cube["output_path"])
    np.testing.assert_allclose(data, np.nanmedian(np.stack(cubes), axis=0), rtol=1e-6)


def test_isosurface_sphere(client: TestClient, data_dir: Path) -> None:
    n = 32
    z, y, x = np.mgrid[0:n, 0:n, 0:n].astype(np.float64)
    r = np.sqrt((x - 15.5) ** 2 + (y - 15.5) ** 2 + (z - 15.5) ** 2)
    vol = (10.0 - r).astype(np.float32)
    vol[0, 0, 0] = np.nan
    body = open_dataset(client, write_cube(data_dir / "sphere.fits", vol))
    headers = {"X-Visivo-Session": body["session_id"]}
    res = client.post("/v1/products/isosurface", json={"dataset_id": body["dataset_id"], "threshold": 0.0},
                      headers=headers).json()
    assert res["valid"] and res["num_polys"] > 1000
    pts = decode(res, "points_base64").reshape(-1, 3)
    polys = np.frombuffer(base64.b64decode(res["polys_base64"]), "<i4").reshape(-1, 4)
    assert pts.shape[0] == res["num_points"] and np.all(polys[:, 0] == 3)
    radii = np.linalg.norm(pts - 15.5, axis=1)
    assert np.allclose(radii, 10.0, atol=0.3)
    tri = pts[polys[:, 1:]]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    assert area == pytest.approx(4 * np.pi * 100, rel=0.02)
    assert res["bounds"][0] == pytest.approx(5.5, abs=0.1) and res["bounds"][1] == pytest.approx(25.5, abs=0.1)
    coarse = client.post("/v1/products/isosurface", json={"dataset_id": body["dataset_id"], "threshold": 0.0,
                                                          "step": 2}, headers=headers).json()
    assert coarse["valid"] and coarse["num_polys"] < res["num_polys"]
    empty = client.post("/v1/products/isosurface", json={"dataset_id": body["dataset_id"], "threshold": 100.0},
                        headers=headers).json()
    assert empty["valid"] is False and "Empty isosurface" in empty["error"]


def test_spectral_tasks(client: TestClient, lines) -> None:
    body, headers, _, _ = lines
    created = client.post("/v1/tasks/linewidth", json={"dataset_id": body["dataset_id"]}, headers=headers).json()
    deadline = time.time() + 60
    while time.time() < deadline:
        status = client.get(f"/v1/tasks/{created['task_id']}").json()
        if status["status"] in ("done", "error"):
            break
        time.sleep(0.05)
    assert status["status"] == "done" and status["result"]["fwhm_base64"]
    iso = client.post("/v1/tasks/isosurface", json={"dataset_id": body["dataset_id"], "threshold": 0.5},
                      headers=headers).json()
    assert iso["task_id"]

"""The server's GPU path end to end on the emulated device: one request of each operation.

Two applications serve the same files: one started with ``VISIVO_BACKEND=gpu`` while the CuPy
stand-in is installed (so ``select_backend`` probes the emulated device and runs the start-up
self-test on it, and every heavy job enters ``cupy.cuda.Device``), and one with the CPU
reference backend. Every operation of the capability table is requested from both; the GPU
answer must say ``computed_on: gpu`` where the response carries it, must have moved data to
the emulated device, and must equal the CPU answer within the module's parity tolerance
(base64 arrays decoded; ids, paths and timings excepted).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.operations import registry
from app.settings import DEMO_DATA_ROOT, Settings
from tests.api.conftest import TOKEN, open_dataset, write_cube
from tests.api.js9_support import ANALYSIS, js9_app
from tests.gpu_emulation.device_array import STATS

NZ, NY, NX = 24, 14, 16
#: Requests named other than their operation (``moment_casa`` is the moment operation's CASA convention).
OPERATION_OF = {"moment_casa": "moment", "moment_orders": "moment", "pv_range_bin": "pv", "moment_mask": "moment",
                "linewidth_mask": "linewidth", "stack_mask": "stack", "noise_regions": "noise"}
#: The noise-aware mask of issue 17 (smooth and clip).
MASK = {"snr": 4.0, "spatial_smooth_beams": 1.0, "spectral_smooth_channels": 3, "dilate_channels": 1}
#: Keys not compared: ids, paths, timings, and where the work ran (``computed_on``, ``contour_tracing``).
_IGNORED = ("_id", "path", "time", "elapsed", "computed_on", "kernel", "contour_tracing", "cache", "url")


def _cube(seed: int) -> np.ndarray:
    """Gaussian lines (varying centre and width) on noise, with blanks (float32)."""
    rng = np.random.default_rng(seed)
    z = np.arange(NZ, dtype=np.float64)[:, None, None]
    yy, xx = np.mgrid[:NY, :NX]
    centre = 11.0 + 3.0 * np.sin(xx / 3.0)
    sigma = 1.5 + 0.2 * yy
    cube = 2.0 * np.exp(-0.5 * ((z - centre) / sigma) ** 2) + rng.normal(0.0, 0.05, (NZ, NY, NX))
    cube[rng.random(cube.shape) < 0.02] = np.nan
    cube[:, 0, 0] = np.nan
    return cube.astype(np.float32)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for k in range(2):
        write_cube(data / f"lines{k}.fits", _cube(k), crval3=1.0e5, cdelt3=-5.0e3)
    return data


def _client(tmp_path: Path, data: Path, backend: str) -> TestClient:
    settings = Settings(token=TOKEN, token_file=tmp_path / f"token-{backend}", output_dir=tmp_path / f"out-{backend}",
                        data_roots=f"{DEMO_DATA_ROOT},{data}", backend=backend, workers=2, heavy_slots=1)
    client = TestClient(js9_app(settings))
    client.headers.update({"X-Visivo-Token": TOKEN})
    return client


@pytest.fixture
def clients(cp, tmp_path: Path, files: Path) -> Iterator[dict[str, TestClient]]:
    with _client(tmp_path, files, "gpu") as gpu, _client(tmp_path, files, "cpu") as cpu:
        health = gpu.get("/v1/health").json()
        assert health["backend"] == "gpu" and health["backend_reason"] == "CUDA devices found and kernels self-tested"
        assert health["devices"][0]["name"].startswith("CPU emulator of CUDA")
        assert cpu.get("/v1/health").json()["backend"] == "cpu"
        yield {"gpu": gpu, "cpu": cpu}


def _requests(client: TestClient, files: Path) -> dict[str, tuple[str, dict[str, Any], dict[str, str]]]:
    """``operation -> (path, body, headers)`` for one request of each operation."""
    first = open_dataset(client, files / "lines0.fits")
    sid, ds = first["session_id"], first["dataset_id"]
    ds2 = open_dataset(client, files / "lines1.fits", session=sid)["dataset_id"]
    h = {"X-Visivo-Session": sid}
    cube_path = str(files / "lines0.fits")
    return {
        "preview": ("/v1/cube/preview", {"dataset_id": ds, "downsample": 2}, h),
        "image_preview": ("/v1/image/preview", {"dataset_id": ds, "max_longest_side": 8}, h),
        "slice": ("/v1/cube/slice", {"dataset_id": ds, "axis": "y", "index": 6}, h),
        "subvolume": ("/v1/cube/subvolume", {"dataset_id": ds, "x0": 2, "x1": 12, "y0": 1, "y1": 9, "z0": 3,
                                             "z1": 20}, h),
        "noise": ("/v1/cube/noise", {"dataset_id": ds}, h),
        "moment": ("/v1/products/moment", {"dataset_id": ds, "order": 1, "channel_start": 2, "channel_end": 21}, h),
        "moment_casa": ("/v1/products/moment", {"dataset_id": ds, "order": 2, "convention": "casa"}, h),
        "pv": ("/v1/cube/pv", {"dataset_id": ds, "vertices": [[1, 2], [14, 11]], "width_pixels": 3}, h),
        "moment_orders": ("/v1/products/moment", {"dataset_id": ds, "orders": [0, 1, 2, 8], "uncertainty": True,
                                                  "channel_start": 2, "channel_end": 21}, h),
        "pv_range_bin": ("/v1/cube/pv", {"dataset_id": ds, "vertices": [[1, 2], [14, 11]], "channel_start": 3,
                                         "channel_end": 17, "spectral_bin": 2, "spatial_bin": 3}, h),
        "linewidth": ("/v1/spectral/linewidth", {"dataset_id": ds}, h),
        "linefit": ("/v1/spectral/linefit", {"dataset_id": ds, "components": 2}, h),
        "region_spectrum": ("/v1/cube/region_spectrum", {"dataset_id": ds, "regions": "image\ncircle(8,7,4)\n"
                                                         "box(12,5,6,4,30)"}, h),
        "region_stats": ("/v1/cube/region_stats", {"dataset_id": ds, "regions": "image\ncircle(8,7,4)\n"
                                                   "box(12,5,6,4,30)", "channel_start": 3, "channel_end": 20}, h),
        "noise_regions": ("/v1/cube/noise", {"dataset_id": ds, "regions": "image\ncircle(8,7,4)\nbox(12,5,6,4,30)"}, h),
        "baseline": (f"/v1/spectral/baseline/{sid}/{ds}", {"session_id": sid, "dataset_id": ds, "poly_order": 1,
                                                           "method": "polynomial",
                                                           "line_free_channels": [[0, 4], [19, 23]]}, {}),
        "stack": ("/v1/spectral/stack", {"dataset_ids": [ds, ds2]}, h),
        "moment_mask": ("/v1/products/moment", {"dataset_id": ds, "orders": [0, 1], "mask": MASK,
                                                "return_mask": True}, h),
        "linewidth_mask": ("/v1/spectral/linewidth", {"dataset_id": ds, "mask": MASK}, h),
        "stack_mask": ("/v1/spectral/stack", {"dataset_ids": [ds, ds2], "mask": MASK}, h),
        "isosurface": ("/v1/products/isosurface", {"dataset_id": ds, "threshold": 0.8}, h),
        "js9_imstat": (ANALYSIS, {"task": "imstat", "image_path": cube_path,
                                  "region": {"shape": "circle", "x": 8, "y": 7, "r": 5}}, {}),
        "js9_specflux": (ANALYSIS, {"task": "specflux", "image_path": cube_path,
                                    "region": {"shape": "box", "x": 8, "y": 7, "width": 8, "height": 6}}, {}),
        "js9_imfit": (ANALYSIS, {"task": "imfit", "image_path": "3c273_continuum.fits.gz",
                                 "region": {"shape": "circle", "x": 129, "y": 129, "r": 12}}, {}),
        "js9_imview": (ANALYSIS, {"task": "imview", "image_path": "3c273_continuum.fits.gz",
                                  "parameters": {"n_levels": 4, "smoothing_sigma": 1.5}}, {}),
    }


def _same(gpu: Any, cpu: Any, rtol: float, atol: float, where: str = "") -> None:
    """Recursive comparison of two JSON answers (base64 arrays decoded as little-endian float32)."""
    if isinstance(cpu, dict):
        assert isinstance(gpu, dict) and set(gpu) == set(cpu), where
        for key in cpu:
            if any(part in key for part in _IGNORED):
                continue
            if key.endswith("_base64") and isinstance(cpu[key], str):
                g, c = base64.b64decode(gpu[key]), base64.b64decode(cpu[key])
                if g != c:
                    assert len(g) == len(c) and len(c) % 4 == 0, f"{where}.{key}"
                    np.testing.assert_allclose(np.frombuffer(g, "<f4"), np.frombuffer(c, "<f4"), rtol=rtol,
                                               atol=atol, equal_nan=True, err_msg=f"{where}.{key}")
            else:
                _same(gpu[key], cpu[key], rtol, atol, f"{where}.{key}")
    elif isinstance(cpu, list):
        assert isinstance(gpu, list) and len(gpu) == len(cpu), where
        for i, (g, c) in enumerate(zip(gpu, cpu, strict=True)):
            _same(g, c, rtol, atol, f"{where}[{i}]")
    elif isinstance(cpu, float) and isinstance(gpu, (int, float)):
        assert math.isclose(gpu, cpu, rel_tol=rtol, abs_tol=atol) or (math.isnan(gpu) and math.isnan(cpu)), (
            f"{where}: gpu {gpu} != cpu {cpu}")
    else:
        assert gpu == cpu, f"{where}: gpu {gpu!r} != cpu {cpu!r}"


def _same_mesh(g_pts: str, g_polys: str, c_pts: str, c_polys: str) -> None:
    """Same vertex set (the GPU sorts by edge id, scikit-image by discovery) and the same area."""

    def mesh(pts: str, polys: str) -> tuple[np.ndarray, np.ndarray]:
        verts = np.frombuffer(base64.b64decode(pts), "<f4").reshape(-1, 3)
        faces = np.frombuffer(base64.b64decode(polys), "<i4").reshape(-1, 4)
        assert np.all(faces[:, 0] == 3)
        return verts, faces[:, 1:]

    (vg, fg), (vc, fc) = mesh(g_pts, g_polys), mesh(c_pts, c_polys)
    np.testing.assert_allclose(vg[np.lexsort(vg.T[::-1])], vc[np.lexsort(vc.T[::-1])], rtol=0, atol=1e-5)

    def area(v: np.ndarray, f: np.ndarray) -> float:
        a, b, c = (v[f[:, k]].astype(np.float64) for k in range(3))
        return float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())

    assert area(vg, fg) == pytest.approx(area(vc, fc), rel=0.02)


def _computed_on(body: Any) -> list[str]:
    if isinstance(body, dict):
        found = [body["computed_on"]] if "computed_on" in body else []
        return found + [x for v in body.values() for x in _computed_on(v)]
    return []


def test_every_operation_on_the_emulated_gpu_matches_the_cpu(clients: dict[str, TestClient], files: Path) -> None:
    requests = {name: _requests(client, files) for name, client in clients.items()}
    table = registry.capability_table()
    on_gpu = {name for name, cap in table.items() if cap.gpu_kernel}
    asked = {OPERATION_OF.get(name, name) for name in requests["gpu"]}
    assert on_gpu <= asked, f"operations with a GPU kernel but no request here: {on_gpu - asked}"
    for op, (path, body, headers) in requests["gpu"].items():
        before = STATS["uploads"] + STATS["launches"]
        gpu = clients["gpu"].post(path, json=body, headers=headers)
        device_work = STATS["uploads"] + STATS["launches"] - before
        cpu_path, cpu_body, cpu_headers = requests["cpu"][op]
        cpu = clients["cpu"].post(cpu_path, json=cpu_body, headers=cpu_headers)
        assert gpu.status_code == cpu.status_code == 200, (op, gpu.text[:400], cpu.text[:400])
        g, c = gpu.json(), cpu.json()
        assert g.get("valid", g.get("success")) is True, (op, g)
        assert set(_computed_on(g)) <= {"gpu"} and set(_computed_on(c)) <= {"cpu"}, op
        cap = table[OPERATION_OF.get(op, op)]
        if not cap.gpu_kernel:
            assert device_work == 0, f"{op} now uses the device: its capability row must say so"
        else:
            assert device_work > 0, f"{op}: nothing reached the emulated device"
        if op == "isosurface":
            _same_mesh(g.pop("points_base64"), g.pop("polys_base64"), c.pop("points_base64"), c.pop("polys_base64"))
        tol = cap.tolerance  # None for host reads: the answers must then be identical
        _same(g, c, max(tol.rtol if tol else 0.0, 1e-12), tol.atol if tol else 0.0, op)

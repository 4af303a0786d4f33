"""GPU-resource scheduling and a cube larger than a worker's memory, on real dask.distributed clusters.

GPU workers: a cluster of one worker advertising ``GPU=1`` (as ``dask cuda worker`` does) and one
plain worker. Tiles of an operation with a GPU kernel must all go to the GPU worker; without CUDA
that worker runs the CPU kernels and the answer says so; with the CPU emulator of CuPy installed in
it (``tests/gpu_emulation``) it runs the ``gpu_kernels`` twins, whose maps agree with the CPU ones
within the kernels' parity tolerance. Real GPUs: unverified on hardware here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

pytest.importorskip("distributed")

from distributed import Nanny, Scheduler, SpecCluster  # noqa: E402

from app.compute.backend import select_backend  # noqa: E402
from app.compute.capabilities import Capability  # noqa: E402
from app.compute.contract import PARITY_TOLERANCE  # noqa: E402
from app.compute.dask_lane import DaskLane, TileSource  # noqa: E402
from app.compute.dispatch import JobContext  # noqa: E402
from app.io.fits_reader import open_fits_image  # noqa: E402
from app.io.fits_writer import CubeWriter  # noqa: E402
from app.main import create_app  # noqa: E402
from app.operations.defs.moment import Moment  # noqa: E402
from app.settings import DEMO_DATA_ROOT, Settings  # noqa: E402
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube  # noqa: E402
from tests.api.dask_tiles import install_emulated_cupy, peak_rss_mib, worker_name  # noqa: E402

NO_GPU_KERNEL = Capability(kernels=(), tier="heavy", gpu_kernel=False, no_gpu_reason="test: CPU only")


def _settings(root: Path, name: str, **extra) -> Settings:
    return Settings(token=TOKEN, token_file=root / f"token_{name}", output_dir=root / f"out_{name}",
                    data_roots=f"{DEMO_DATA_ROOT},{root}", backend="cpu", workers=2, heavy_slots=1,
                    samp_watch_seconds=0, **{"chunk_megabytes": 1, **extra})


def _nanny(name: str, **options) -> dict:
    return {"cls": Nanny, "options": {"nthreads": 1, "name": name, "memory_limit": "512MiB", **options}}


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[SpecCluster]:
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": "127.0.0.1:0", "port": 0}}
    workers = {"gpu0": _nanny("gpu0", resources={"GPU": 1}), "cpu0": _nanny("cpu0")}
    with SpecCluster(workers=workers, scheduler=scheduler) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(4)
    nz, ny, nx = 48, 40, 64
    z = np.arange(nz)[:, None, None]
    data = 2.0 * np.exp(-0.5 * ((z - 20 - 8 * rng.random((1, ny, nx))) / 3.0) ** 2) + rng.normal(0, 0.1, (nz, ny, nx))
    data[:, 3, 5] = np.nan
    return write_cube(tmp_path_factory.mktemp("kinds") / "kinds.fits", data.astype(np.float32))


def _context(capability: Capability) -> JobContext:
    return JobContext(select_backend("cpu"), None, 1 << 20, capability=capability)


def test_gpu_tiles_go_to_the_gpu_worker_and_report_the_cpu_fallback(gpu_cluster: SpecCluster, cube: Path) -> None:
    lane = DaskLane(gpu_cluster.scheduler_address)
    image = open_fits_image(cube)
    try:
        assert lane.gpus() == 1 and lane.report()["gpus"] == 1 and lane.report()["workers"] == 2
        tile = TileSource.of(image.source)
        reads = [(slice(None), slice(y, y + 2), slice(None)) for y in range(0, 40, 2)]
        ctx = _context(Moment.capability)  # a GPU kernel: tiles ask for GPU=1
        assert set(lane.map_tiles(ctx, tile, reads, worker_name)) == {"gpu0"}
        tally = ctx.cluster_tiles
        assert tally["tiles"] == len(reads) and tally["kernels"] == {"numpy": len(reads)}
        assert len(tally["fallback"]) == 1
        assert "advertises GPU=1 but" in tally["fallback"][0] and "ran the CPU kernels" in tally["fallback"][0]
        plain = _context(NO_GPU_KERNEL)  # no GPU kernel: any worker, no fallback to report
        assert set(lane.map_tiles(plain, tile, reads, worker_name)) == {"gpu0", "cpu0"}
        assert plain.cluster_tiles["fallback"] == [] and plain.cluster_tiles["kernels"] == {"numpy": len(reads)}
    finally:
        image.close()
        lane.close()


def test_moment_on_a_gpu_cluster_without_cuda_equals_local(gpu_cluster: SpecCluster, cube: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the API: a cluster with GPU workers makes the server ship float32 tiles (no compiled
    path); the GPU worker without CUDA runs the CPU kernels: bit-identical to the local NumPy path."""
    monkeypatch.setenv("VISIVO_COMPILED", "0")
    root = cube.parent
    remote = _settings(root, "gpu", dask_scheduler=gpu_cluster.scheduler_address)
    with TestClient(create_app(remote)) as dist, TestClient(create_app(_settings(root, "cpu"))) as local:
        maps = []
        for client in (dist, local):
            client.headers.update({"X-Visivo-Token": TOKEN})
            ds = open_dataset(client, cube)["dataset_id"]
            body = client.post("/v1/products/moment", json={"dataset_id": ds, "order": 1}).json()
            assert body["valid"], body
            maps.append((decode(body, shape=(body["height"], body["width"])), body.get("cluster")))
        assert dist.get("/v1/health").json()["cluster"]["gpus"] == 1
    (a, tally), (b, none) = maps
    assert none is None and tally["kernels"] == {"numpy": tally["tiles"]} and tally["fallback"]
    assert np.isfinite(a).any() and a.tobytes() == b.tobytes()


def test_gpu_worker_runs_the_cupy_twins(gpu_cluster: SpecCluster, cube: Path) -> None:
    """The GPU worker with the CuPy emulator: its tiles run ``gpu_kernels.moments`` (kernel ``cupy``),
    and the map equals the CPU kernel's within the parity tolerance of ``moments``."""
    lane = DaskLane(gpu_cluster.scheduler_address)
    image = open_fits_image(cube)
    try:
        gpu_worker = next(a for a, w in lane.client.scheduler_info(n_workers=-1)["workers"].items()
                          if w.get("resources", {}).get("GPU"))
        assert lane.client.run(install_emulated_cupy, workers=[gpu_worker])[gpu_worker] == "cupy"
        from app.services.moments import MomentParams, compute_moment_maps  # noqa: PLC0415
        from app.services.sessions import Dataset  # noqa: PLC0415

        dataset = Dataset("ds_kinds", "s", cube, "cube", image, {})
        params = MomentParams(2, "reference", 0, image.source.shape[0] - 1, None, None, None, None)
        ctx = _context(Moment.capability)
        ctx.cluster = lane
        maps, kernel = compute_moment_maps(ctx, dataset, params, (0, 1, 2))
        assert kernel == "numpy" and ctx.cluster_tiles["kernels"] == {"cupy": ctx.cluster_tiles["tiles"]}
        assert ctx.cluster_tiles["fallback"] == []
        local, _ = compute_moment_maps(_context(Moment.capability), dataset, params, (0, 1, 2))
        tol = PARITY_TOLERANCE["moments"]
        for order in (0, 1, 2):
            np.testing.assert_allclose(maps[order], local[order], rtol=tol.rtol, atol=tol.atol)
    finally:
        image.close()
        lane.close()


def test_cube_three_times_a_worker_memory_limit(tmp_path: Path, record_property) -> None:  # noqa: ANN001
    """768 MiB cube, two 256 MiB workers: the moment map comes back exact, no worker restarted, every
    worker's peak RSS stayed below 80 % of its memory_limit, where Dask would pause it (recorded as the
    test's ``worker_peak_rss_mib`` property; ~105-110 MiB here, of which ~93 MiB are the imports)."""
    from distributed import LocalCluster  # noqa: PLC0415

    limit_mib, (nz, ny, nx) = 256, (192, 1024, 1024)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=f"{limit_mib}MiB",
                      dashboard_address="127.0.0.1:0", scheduler_port=0) as cluster:
        lane = DaskLane(cluster.scheduler_address)
        path = tmp_path / "big.fits"
        amplitude = (1.0 + (np.arange(nx)[None, :] + 2 * np.arange(ny)[:, None]) % 7).astype(np.float32)
        profile = np.exp(-0.5 * ((np.arange(nz) - 96.0) / 20.0) ** 2).astype(np.float32)
        header = fits.Header()
        for i, (ctype, cdelt) in enumerate((("RA---SIN", -0.001), ("DEC--SIN", 0.001), ("VRAD", 5000.0)), start=1):
            header[f"CTYPE{i}"], header[f"CDELT{i}"], header[f"CRPIX{i}"], header[f"CRVAL{i}"] = ctype, cdelt, 1.0, 0.0
        header["CUNIT3"] = "m/s"
        with CubeWriter(path, header, (nz, ny, nx)) as writer:
            for y0 in range(0, ny, 128):
                writer.write(slice(y0, y0 + 128), profile[:, None, None] * amplitude[None, y0:y0 + 128])
            writer.commit()
        pids = lane.client.run(os.getpid)
        try:
            settings = _settings(tmp_path, "big", dask_scheduler=cluster.scheduler_address, chunk_megabytes=32)
            with TestClient(create_app(settings)) as client:  # default settings: compiled kernels if numba is there
                client.headers.update({"X-Visivo-Token": TOKEN})
                ds = open_dataset(client, path)["dataset_id"]
                body = client.post("/v1/products/moment", json={"dataset_id": ds, "order": 0}).json()
            assert body["valid"], body
            # workers below 1 GiB never load numba (~150 MiB): the server ships float32 tiles to the NumPy kernels
            assert body["cluster"]["kernels"] == {"numpy": body["cluster"]["tiles"]}
            assert body["cluster"]["tiles"] >= 4 * nz * ny * nx // (32 << 20)  # tiles of ≤ 32 MiB working memory
            peaks = lane.client.run(peak_rss_mib)
            assert lane.client.run(os.getpid) == pids  # no worker restarted
        finally:
            lane.close()
    record_property("worker_peak_rss_mib", {k.rsplit(":", 1)[-1]: round(v) for k, v in peaks.items()})
    assert all(v < 0.8 * limit_mib for v in peaks.values()), peaks  # below Dask's pause (80 %): never paused
    expected = amplitude.astype(np.float64) * float(np.sum(profile, dtype=np.float64)) * 5.0  # Σ I·Δv, km/s
    np.testing.assert_allclose(decode(body, shape=(ny, nx)), expected, rtol=1e-5)

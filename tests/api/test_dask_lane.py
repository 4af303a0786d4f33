"""The distributed lane on a real dask.distributed LocalCluster (2 worker processes, no mocks).

Every distributed answer is compared with the local path's answer on the same file, bit for bit
(the workers read the same slabs with the same reader and run the same CPU kernels).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402

from app.compute.backend import select_backend  # noqa: E402
from app.compute.dask_lane import ClusterUnavailable, DaskLane, TileSource  # noqa: E402
from app.compute.dispatch import JobContext  # noqa: E402
from app.errors import Cancelled  # noqa: E402
from app.io.fits_reader import open_fits_image  # noqa: E402
from app.main import create_app  # noqa: E402
from app.runtime import build_runtime  # noqa: E402
from app.settings import DEMO_DATA_ROOT, Settings  # noqa: E402
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube  # noqa: E402
from tests.api.dask_tiles import row_sums, slow_row_sums  # noqa: E402

NGC = DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz"


def _settings(root: Path, name: str, **extra) -> Settings:
    return Settings(token=TOKEN, token_file=root / f"token_{name}", output_dir=root / f"out_{name}",
                    data_roots=f"{DEMO_DATA_ROOT},{root / 'data'}", backend="cpu", workers=2, heavy_slots=1,
                    chunk_megabytes=1, samp_watch_seconds=0, **extra)


def _synthetic(path: Path) -> Path:
    """A 64×50×64 cube: a Gaussian line of varying centre/width on noise, with NaN pixels (4 y-slabs at 1 MiB)."""
    rng = np.random.default_rng(15)
    nz, ny, nx = 64, 50, 64
    z = np.arange(nz)[:, None, None]
    centre = 20 + 20 * rng.random((1, ny, nx))
    width = 2 + 4 * rng.random((1, ny, nx))
    cube = 3.0 * np.exp(-0.5 * ((z - centre) / width) ** 2) + rng.normal(0, 0.2, (nz, ny, nx))
    cube[:, 7, 9] = np.nan
    cube[30:34, 20:23, 40:44] = np.nan
    return write_cube(path, cube.astype(np.float32))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="512MiB",
                      dashboard_address="127.0.0.1:0", scheduler_port=0) as local:
        yield local


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask")
    (root / "data").mkdir()
    _synthetic(root / "data" / "synthetic.fits")
    return root


@pytest.fixture(scope="module")
def clients(cluster: LocalCluster, root: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """(distributed, local) API clients on the same data roots.

    The workers run the NumPy kernels on float32 tiles, so the local side runs them too
    (``VISIVO_COMPILED=0``): bitwise equality holds where the same kernel runs; the compiled
    kernels are checked against that oracle in ``tests/kernels/test_compiled_moments.py``.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("VISIVO_COMPILED", "0")
    request_finalizer = patch.undo
    remote = _settings(root, "dask", dask_scheduler=cluster.scheduler_address)
    with TestClient(create_app(remote)) as dist, TestClient(create_app(_settings(root, "local"))) as local:
        for c in (dist, local):
            c.headers.update({"X-Visivo-Token": TOKEN})
        try:
            yield dist, local
        finally:
            request_finalizer()


def _pair(clients, path: Path) -> tuple[str, str]:
    return tuple(open_dataset(c, path)["dataset_id"] for c in clients)  # type: ignore[return-value]


def _moment(client: TestClient, ds: str, **body) -> dict:
    answer = client.post("/v1/products/moment", json={"dataset_id": ds, **body}).json()
    assert answer["valid"], answer
    return answer


CASES = {
    "ngc": [("reference", o) for o in (0, 1, 2, 8)] + [("casa", o) for o in (-1, 0, 2, 3, 9)],
    "synthetic": [("reference", o) for o in (0, 1, 2, 3, 4, 6, 10)] + [("casa", o) for o in (0, 3, 5, 7, 11)],
}


@pytest.mark.parametrize("which", ["ngc", "synthetic"])
def test_distributed_moments_equal_local_bitwise(clients, root: Path, which: str) -> None:
    path = NGC if which == "ngc" else root / "data" / "synthetic.fits"
    dist_ds, local_ds = _pair(clients, path)
    dist, local = clients
    for convention, order in CASES[which]:
        a = _moment(dist, dist_ds, order=order, convention=convention)
        b = _moment(local, local_ds, order=order, convention=convention)
        ma, mb = decode(a, shape=(a["height"], a["width"])), decode(b, shape=(b["height"], b["width"]))
        assert np.isfinite(ma).any()
        assert ma.tobytes() == mb.tobytes(), (convention, order)
    # the gzip demo cube is read by the workers from the server's inflated copy under the output dir
    health = dist.get("/v1/health").json()
    assert health["cluster"]["workers"] == 2 and health["cluster"]["threads"] == 2
    assert health["capabilities"]["moment"]["distributable"] is True
    assert local.get("/v1/health").json()["cluster"] is None


def test_distributed_moment_independent_reference(clients, root: Path) -> None:
    """Order 0 on the synthetic cube equals Σ I·Δv computed here with NumPy (float64 → float32)."""
    from astropy.io import fits

    dist_ds, _ = _pair(clients, root / "data" / "synthetic.fits")
    a = _moment(clients[0], dist_ds, order=0)
    cube = fits.getdata(root / "data" / "synthetic.fits").astype(np.float64)
    expected = np.nansum(cube, axis=0) * 5.0  # |CDELT3| = 5 km/s
    expected[np.all(~np.isfinite(cube), axis=0)] = np.nan
    np.testing.assert_allclose(decode(a, shape=expected.shape), expected, rtol=1e-5, atol=1e-4)


def _until(condition) -> bool:  # noqa: ANN001
    """Poll ``condition()`` for up to ~10 s (no timing is asserted, only that it becomes true)."""
    for _ in range(100):
        if condition():
            return True
        threading.Event().wait(0.1)
    return False


def test_distributed_noise_equals_local(clients, cluster: LocalCluster) -> None:
    dist_ds, local_ds = _pair(clients, NGC)
    a = clients[0].post("/v1/cube/noise", json={"dataset_id": dist_ds}).json()
    b = clients[1].post("/v1/cube/noise", json={"dataset_id": local_ds}).json()
    assert a["valid"] and b["valid"]
    for key in ("mad", "sigma", "median", "blank_fraction", "num_channels", "region"):
        assert a[key] == b[key], key
    assert a["num_channels"] == a["channel_end"] - a["channel_start"] + 1 > 1
    assert any(m is not None and m > 0 for m in a["mad"])
    # the server releases its tiles once assembled: the cluster keeps none of them in memory
    assert _until(lambda: not any("run_tile" in str(key) for key in cluster.scheduler.tasks))


def test_distributed_region_noise_equals_local(clients) -> None:  # noqa: ANN001
    """Per-region noise (issue 17 item 6) through the workers: the same numbers as the local path."""
    dist_ds, local_ds = _pair(clients, NGC)
    regions = "image\ncircle(100,120,30)\nbox(200,60,40,30,0)"
    a = clients[0].post("/v1/cube/noise", json={"dataset_id": dist_ds, "regions": regions}).json()
    b = clients[1].post("/v1/cube/noise", json={"dataset_id": local_ds, "regions": regions}).json()
    assert a["valid"] and b["valid"], (a, b)
    assert a["regions"] == b["regions"] and a["mad"] == b["mad"]
    assert any(m is not None and m > 0 for m in a["regions"][1]["mad"])


def test_distributed_linewidth_equals_local(clients, root: Path) -> None:
    dist_ds, local_ds = _pair(clients, root / "data" / "synthetic.fits")
    body: dict = {}
    a = clients[0].post("/v1/spectral/linewidth", json={"dataset_id": dist_ds, **body}).json()
    b = clients[1].post("/v1/spectral/linewidth", json={"dataset_id": local_ds, **body}).json()
    assert a["valid"] and b["valid"], (a.get("error"), b.get("error"))
    keys = [k for k in a if isinstance(a[k], str) and k.endswith("base64")]
    assert keys
    for key in keys:
        assert a[key] == b[key], key
    # the row-chunk parts' tile tallies are summed into the answer
    assert a["cluster"]["tiles"] >= 4 and a["cluster"]["kernels"] == {"numpy": a["cluster"]["tiles"]}
    assert "cluster" not in b


def _context(progress=None) -> JobContext:
    return JobContext(select_backend("cpu"), None, 1 << 20, progress=progress)


def _tiles(path: Path) -> tuple[TileSource, list[tuple[slice, slice, slice]], object]:
    """The tile source of a plain FITS cube and 2-row slabs over it (25 tiles)."""
    image = open_fits_image(path)
    tile = TileSource.of(image.source)
    assert tile is not None and tile.path == str(path)
    reads = [(slice(None), slice(y, y + 2), slice(None)) for y in range(0, image.source.shape[1], 2)]
    return tile, reads, image


def test_progress_increases_to_one(cluster: LocalCluster, root: Path) -> None:
    lane = DaskLane(cluster.scheduler_address)
    try:
        tile, reads, image = _tiles(root / "data" / "synthetic.fits")
        seen: list[float] = []
        sums = lane.map_tiles(_context(seen.append), tile, reads, row_sums)
        image.close()
        assert seen[-1] == 1.0 and len(seen) >= 2
        assert all(b > a for a, b in zip(seen, seen[1:], strict=False))
        assert all(abs(v * len(reads) - round(v * len(reads))) < 1e-9 for v in seen)  # completed tiles / total
        local = open_fits_image(root / "data" / "synthetic.fits")
        expected = [row_sums(local.source.read(z=z, y=y, x=x)) for z, y, x in reads]
        local.close()
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(sums, expected, strict=True))
    finally:
        lane.close()


def _active_tiles(dask_scheduler) -> int:  # noqa: ANN001 - runs on the scheduler
    """Tile tasks the scheduler still runs or plans to run."""
    return sum(1 for key, ts in dask_scheduler.tasks.items() if "run_tile" in str(key)
               and ts.state in ("processing", "waiting", "queued", "no-worker", "released"))


def test_cancel_cancels_the_futures(cluster: LocalCluster, root: Path) -> None:
    lane = DaskLane(cluster.scheduler_address)
    try:
        tile, reads, image = _tiles(root / "data" / "synthetic.fits")
        ctx = _context()
        ctx._progress = lambda fraction: ctx.cancel_event.set()  # cancel once the first tile is in
        with pytest.raises(Cancelled):
            lane.map_tiles(ctx, tile, reads, slow_row_sums)
        image.close()
        forgotten = threading.Event()
        for _ in range(100):  # the scheduler forgets the cancelled tasks (polling, no timing asserted)
            if lane.client.run_on_scheduler(_active_tiles) == 0:
                forgotten.set()
                break
            threading.Event().wait(0.1)
        assert forgotten.is_set()
    finally:
        lane.close()


def test_task_cancel_through_the_api(clients, root: Path) -> None:
    dist, _ = clients
    ds = open_dataset(dist, NGC)["dataset_id"]
    task = dist.post("/v1/tasks/moment", json={"dataset_id": ds, "order": 3, "convention": "casa",
                                               "channel_start": 1}).json()
    assert task["valid"], task
    assert dist.delete(f"/v1/tasks/{task['task_id']}").json()["deleted"] is True
    assert dist.get(f"/v1/tasks/{task['task_id']}").status_code == 404
    assert dist.get("/v1/health").json()["lanes"][0]["running"] == 0  # the slot is free again


def test_worker_cannot_see_the_path(clients, root: Path) -> None:
    """The server opened the file, then it vanished from the workers' view (unlinked: the server keeps
    its memmap, a worker opening the path finds nothing): the error names the path and the worker."""
    path = Path(shutil.copy(root / "data" / "synthetic.fits", root / "data" / "vanishing.fits"))
    dist, _ = clients
    ds = open_dataset(dist, path)["dataset_id"]
    path.unlink()
    for route, body in (("/v1/products/moment", {"order": 0}), ("/v1/cube/noise", {})):
        answer = dist.post(route, json={"dataset_id": ds, **body}).json()
        assert answer["valid"] is False
        assert str(path) in answer["error"] and "Dask worker tcp://" in answer["error"], answer["error"]


def test_worker_killed_mid_job_does_not_change_the_answer(cluster: LocalCluster, root: Path) -> None:
    """SIGKILL one worker process once the first tile is in: its tiles are recomputed on the other
    worker (or on the nanny's restarted one) and every tile's answer equals the local read."""
    lane = DaskLane(cluster.scheduler_address)
    try:
        tile, reads, image = _tiles(root / "data" / "synthetic.fits")
        victim = max(lane.client.run(os.getpid).values())
        ctx = _context()
        killed: list[int] = []

        def kill_once(fraction: float) -> None:
            if not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        ctx._progress = kill_once
        sums = lane.map_tiles(ctx, tile, reads, slow_row_sums)
        assert killed == [victim]
        expected = [row_sums(image.source.read(z=z, y=y, x=x)) for z, y, x in reads]
        image.close()
        assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(sums, expected, strict=True))
        lane.client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker for the next tests
    finally:
        lane.close()


def test_unreachable_scheduler_is_a_clear_error(root: Path, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "tcp://127.0.0.1:9"
    settings = _settings(root, "wrong", dask_scheduler=wrong, dask_connect_timeout_seconds=1)
    with pytest.raises(ClusterUnavailable, match="tcp://127.0.0.1:9.*VISIVO_DASK_FALLBACK=local"):
        build_runtime(settings, TOKEN)
    fallback = _settings(root, "fallback", dask_scheduler=wrong, dask_connect_timeout_seconds=1,
                         dask_fallback="local")
    with caplog.at_level(logging.WARNING, logger="visivo.dask"):
        runtime = build_runtime(fallback, TOKEN)
    try:
        assert runtime.cluster is None
        assert any("Falling back to local execution" in r.getMessage() for r in caplog.records)
    finally:
        runtime.close()


def test_local_cluster_lives_with_the_runtime(root: Path) -> None:
    runtime = build_runtime(_settings(root, "own", dask_scheduler="local:1"), TOKEN)
    lane = runtime.cluster
    assert lane is not None and lane.report()["workers"] == 1 and lane.report()["local"] is True
    runtime.close()
    assert lane.cluster.status.name == "closed"
    with pytest.raises(OSError):
        Client(lane.address, timeout=1)


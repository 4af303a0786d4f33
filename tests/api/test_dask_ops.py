"""Baseline, stacking, PV, isosurface and the compiled moments on a real LocalCluster (2 worker processes).

Each distributed answer is compared with the local path's answer, bit for bit where the same kernel
runs (the workers read the same slabs with the same reader), and with an independent NumPy reference.
``VISIVO_DASK_MIN_MEGABYTES=0`` makes PV and isosurface use the cluster on these small cubes.
"""

from __future__ import annotations

import base64
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

pytest.importorskip("distributed")

from distributed import LocalCluster  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import DEMO_DATA_ROOT, Settings  # noqa: E402
from tests.api.conftest import TOKEN, decode, open_dataset, write_cube  # noqa: E402

NGC = DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz"


def _settings(root: Path, name: str, **extra) -> Settings:
    return Settings(token=TOKEN, token_file=root / f"token_{name}", output_dir=root / f"out_{name}",
                    data_roots=f"{DEMO_DATA_ROOT},{root / 'data'}", backend="cpu", workers=2, heavy_slots=1,
                    chunk_megabytes=1, samp_watch_seconds=0, **extra)


def _synthetic(seed: int = 15, scale: float = 1.0) -> np.ndarray:
    """64×50×64: a Gaussian line (channels ~14..46) on a linear baseline and noise, with NaN pixels."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = 64, 50, 64
    z = np.arange(nz)[:, None, None]
    centre = 25 + 10 * rng.random((1, ny, nx))
    width = 1.5 + 2 * rng.random((1, ny, nx))
    base = rng.normal(0, 1, (1, ny, nx)) + rng.normal(0, 1, (1, ny, nx)) * z / nz
    cube = scale * (3.0 * np.exp(-0.5 * ((z - centre) / width) ** 2) + base + rng.normal(0, 0.2, (nz, ny, nx)))
    cube[:, 7, 9] = np.nan
    cube[30:34, 20:23, 40:44] = np.nan
    return cube.astype(np.float32)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="1GiB",  # numba fits
                      dashboard_address="127.0.0.1:0", scheduler_port=0) as local:
        yield local


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask_ops")
    (root / "data").mkdir()
    write_cube(root / "data" / "a.fits", _synthetic(15))
    write_cube(root / "data" / "b.fits", _synthetic(16, 2.0))
    return root


@pytest.fixture(scope="module")
def clients(cluster: LocalCluster, root: Path) -> Iterator[tuple[TestClient, TestClient]]:
    """(distributed, local) API clients on the same data roots, the NumPy kernels on both sides."""
    patch = pytest.MonkeyPatch()
    patch.setenv("VISIVO_COMPILED", "0")
    remote = _settings(root, "dask", dask_scheduler=cluster.scheduler_address, dask_min_megabytes=0)
    try:
        with TestClient(create_app(remote)) as dist, TestClient(create_app(_settings(root, "local"))) as local:
            for c in (dist, local):
                c.headers.update({"X-Visivo-Token": TOKEN})
            yield dist, local
    finally:
        patch.undo()


def _open(client: TestClient, *paths: Path) -> tuple[str, list[str]]:
    sid, ids = None, []
    for path in paths:
        body = open_dataset(client, path, session=sid)
        sid = body["session_id"]
        ids.append(body["dataset_id"])
    return sid, ids


def _post(client: TestClient, route: str, body: dict, sid: str) -> dict:
    answer = client.post(route, json=body, headers={"X-Visivo-Session": sid}).json()
    assert answer["valid"], answer
    return answer


BASELINE_CASES = {"ngc": (NGC, [[0, 4], [50, 55]]), "synthetic": (None, [[0, 9], [54, 63]])}


@pytest.mark.parametrize("which", ["ngc", "synthetic"])
def test_distributed_baseline_equals_local_bitwise(clients, root: Path, which: str) -> None:
    path, line_free = BASELINE_CASES[which]
    path = path or root / "data" / "a.fits"
    answers = []
    for client in clients:
        sid, (ds,) = _open(client, path)
        req = {"poly_order": 1, "line_free_channels": line_free}
        answers.append(_post(client, f"/v1/spectral/baseline/{sid}/{ds}", req, sid))
    dist, local = answers
    assert dist["cluster"]["tiles"] > 1 and dist["cluster"]["kernels"] == {"numpy": dist["cluster"]["tiles"]}
    assert "cluster" not in local
    for key in ("rms_before", "rms_after", "pixels_by_outcome", "range_min", "range_max", "fit_channels"):
        assert dist[key] == local[key], key
    a, b = fits.getdata(dist["output_path"]), fits.getdata(local["output_path"])
    assert a.tobytes() == b.tobytes()
    if which == "synthetic":  # independent reference: a straight line fitted per pixel by np.polyfit
        cube = fits.getdata(path).astype(np.float64)
        free = np.r_[0:10, 54:64]
        z = np.arange(cube.shape[0])
        flat = cube.reshape(cube.shape[0], -1)
        ok = np.all(np.isfinite(flat[free]), axis=0)
        coef = np.polyfit(free, flat[free][:, ok], 1)
        expected = flat[:, ok] - (coef[0][None] * z[:, None] + coef[1][None])
        got = a.reshape(a.shape[0], -1)[:, ok].astype(np.float64)
        finite = np.isfinite(flat[:, ok])
        np.testing.assert_allclose(got[finite], expected[finite], atol=2e-4)


def test_distributed_stack_of_ngc5921_equals_local(clients) -> None:
    """NGC 5921 stacked with itself: the mean spectrum of the cube, bit-identical on both paths."""
    answers = []
    for client in clients:
        sid, ids = _open(client, NGC, NGC)
        answers.append(_post(client, "/v1/spectral/stack", {"dataset_ids": ids, "method": "mean"}, sid))
    assert answers[0]["data_base64"] == answers[1]["data_base64"] and answers[0]["cluster"]["tiles"] >= 2
    with fits.open(NGC) as hdul:
        cube = np.squeeze(hdul[0].data).astype(np.float64)
    expected = np.nanmean(cube.reshape(cube.shape[0], -1), axis=1)
    np.testing.assert_allclose(decode(answers[0]), expected, rtol=1e-5, atol=1e-9)


def test_distributed_stack_equals_local(clients, root: Path) -> None:
    paths = (root / "data" / "a.fits", root / "data" / "b.fits")
    spectra, cubes = [], []
    for client in clients:
        sid, ids = _open(client, *paths)
        spectra.append(_post(client, "/v1/spectral/stack", {"dataset_ids": ids, "method": "weighted_mean",
                                                            "weight_by": "rms"}, sid))
        cubes.append(_post(client, "/v1/spectral/stack", {"dataset_ids": ids, "mode": "cube",
                                                          "method": "median"}, sid))
    assert spectra[0]["data_base64"] == spectra[1]["data_base64"]
    assert spectra[0]["weights_used"] == spectra[1]["weights_used"] and spectra[0]["peaks"] == spectra[1]["peaks"]
    assert spectra[0]["cluster"]["tiles"] >= 2 * 2  # 2 cubes × ≥ 2 y-slabs at 1 MiB
    a, b = fits.getdata(cubes[0]["output_path"]), fits.getdata(cubes[1]["output_path"])
    assert a.tobytes() == b.tobytes() and cubes[0]["cluster"]["tiles"] > 1
    data = [fits.getdata(p).astype(np.float64) for p in paths]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the all-NaN pixel: NaN in both
        median = np.nanmedian(np.stack(data), axis=0)
    np.testing.assert_allclose(a, median, rtol=1e-6, atol=1e-6)
    means = np.vstack([np.nanmean(d.reshape(d.shape[0], -1), axis=1) for d in data])
    got = np.vstack([np.frombuffer(base64.b64decode(s), "<f4") for s in spectra[0]["spectra_base64"]])
    np.testing.assert_allclose(got, means, rtol=1e-5, atol=1e-6)


def test_distributed_pv_and_isosurface_equal_local(clients, root: Path) -> None:
    path = root / "data" / "a.fits"
    pv, iso = [], []
    for client in clients:
        sid, (ds,) = _open(client, path)
        pv.append(_post(client, "/v1/cube/pv", {"dataset_id": ds, "vertices": [[3, 4], [60, 45], [10, 40]],
                                               "width_pixels": 3}, sid))
        iso.append(_post(client, "/v1/products/isosurface", {"dataset_id": ds, "threshold": 2.0}, sid))
    assert pv[0]["data_base64"] == pv[1]["data_base64"] and pv[0]["cluster"]["tiles"] >= 1
    assert iso[0]["points_base64"] == iso[1]["points_base64"] and iso[0]["polys_base64"] == iso[1]["polys_base64"]
    assert iso[0]["cluster"]["tiles"] >= 1 and "cluster" not in iso[1]
    # NGC 5921: a PV across the galaxy and its 20 mJy/beam isosurface
    pv, iso = [], []
    for client in clients:
        sid, (ds,) = _open(client, NGC)
        pv.append(_post(client, "/v1/cube/pv", {"dataset_id": ds, "vertices": [[90, 160], [170, 90]],
                                               "width_pixels": 5}, sid))
        iso.append(_post(client, "/v1/products/isosurface", {"dataset_id": ds, "threshold": 0.02}, sid))
    assert pv[0]["data_base64"] == pv[1]["data_base64"] and pv[0]["cluster"]["tiles"] >= 1
    assert iso[0]["num_polys"] == iso[1]["num_polys"] > 100 and iso[0]["cluster"]["tiles"] >= 1
    assert iso[0]["points_base64"] == iso[1]["points_base64"]
    # independent reference of the PV along a horizontal path, width 1: the cube's own row
    sid, (ds,) = _open(clients[0], path)
    row = _post(clients[0], "/v1/cube/pv", {"dataset_id": ds, "vertices": [[0, 11], [63, 11]]}, sid)
    cube = fits.getdata(path).astype(np.float32)
    assert row["cluster"]["tiles"] >= 1
    assert np.array_equal(decode(row, shape=(row["rows"], row["cols"])), cube[:, 11, :], equal_nan=True)


def test_size_gate_keeps_small_work_local(cluster: LocalCluster, root: Path) -> None:
    """With the default VISIVO_DASK_MIN_MEGABYTES (256) the small PV runs in the server: no cluster tiles."""
    settings = _settings(root, "gated", dask_scheduler=cluster.scheduler_address)
    with TestClient(create_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        sid, (ds,) = _open(client, root / "data" / "a.fits")
        pv = _post(client, "/v1/cube/pv", {"dataset_id": ds, "vertices": [[3, 4], [60, 45]]}, sid)
        assert "cluster" not in pv
        moment = _post(client, "/v1/products/moment", {"dataset_id": ds, "order": 0}, sid)
        assert moment["cluster"]["tiles"] >= 1  # moments are not size-gated


def test_compiled_moments_on_the_workers(cluster: LocalCluster, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With numba, the workers run the compiled kernels on their raw views of the file: maps bit-identical
    to the server's own compiled path, and equal to the NumPy oracle within the documented tolerance."""
    pytest.importorskip("numba")
    monkeypatch.setenv("VISIVO_COMPILED", "1")
    monkeypatch.setenv("VISIVO_COMPILED_WARMUP", "0")
    remote = _settings(root, "numba_dask", dask_scheduler=cluster.scheduler_address)
    with TestClient(create_app(remote)) as dist, TestClient(create_app(_settings(root, "numba_local"))) as local:
        maps = {}
        for name, client in (("dist", dist), ("local", local)):
            client.headers.update({"X-Visivo-Token": TOKEN})
            sid, ids = _open(client, NGC, root / "data" / "a.fits")
            for which, ds in zip(("ngc", "synthetic"), ids, strict=True):
                for convention, order in COMPILED_CASES:
                    body = _post(client, "/v1/products/moment", {"dataset_id": ds, "order": order,
                                                                 "convention": convention}, sid)
                    maps[name, which, convention, order] = (decode(body, shape=(body["height"], body["width"])),
                                                            body.get("cluster"))
                lw = _post(client, "/v1/spectral/linewidth", {"dataset_id": ds}, sid)
                maps[name, which, "linewidth"] = (lw["fwhm_base64"], lw.get("cluster"), lw["kernel"])
    for which in ("ngc", "synthetic"):
        for convention, order in COMPILED_CASES:
            (a, tiles), (b, none) = maps["dist", which, convention, order], maps["local", which, convention, order]
            assert none is None and tiles["kernels"] == {"numba": tiles["tiles"]}, tiles
            assert np.isfinite(a).any() and a.tobytes() == b.tobytes(), (which, convention, order)
        # the compiled line-width fit too: the same per-pixel kernel, so the same FWHM map
        (a, tiles, ka), (b, none, kb) = maps["dist", which, "linewidth"], maps["local", which, "linewidth"]
        assert ka == kb == "numba" and none is None and tiles["kernels"] == {"numba": tiles["tiles"]}, tiles
        assert a == b, which
    # an independent reference: Σ I·|Δv| over the finite channels (|CDELT3| = 5 km/s)
    cube = fits.getdata(root / "data" / "a.fits").astype(np.float64)
    expected = np.nansum(cube, axis=0) * 5.0
    expected[np.all(~np.isfinite(cube), axis=0)] = np.nan
    np.testing.assert_allclose(maps["dist", "synthetic", "reference", 0][0], expected, rtol=1e-5, atol=1e-3)


COMPILED_CASES = (("reference", 0), ("reference", 2), ("casa", 1), ("casa", 8))


def test_worker_raw_tiles_keep_the_stored_values_and_reopen_changed_files(tmp_path: Path) -> None:
    """The raw tiles a worker hands to the compiled kernels: the stored int16 values, BLANK and scaling
    untouched; the file stays open between tiles, and a rewritten file is opened again."""
    import os  # noqa: PLC0415

    from app.compute.dask_lane import TileSource, _open_cube, close_open_files  # noqa: PLC0415
    from app.io.fits_reader import open_fits_image  # noqa: PLC0415

    raw = np.arange(6 * 5 * 7, dtype=np.int16).reshape(6, 5, 7) - 100
    raw[2, 1, 3] = -32768
    hdu = fits.PrimaryHDU(raw)
    hdu.header["BSCALE"], hdu.header["BZERO"], hdu.header["BLANK"] = 0.5, 10.0, -32768
    path = tmp_path / "int16.fits"
    hdu.writeto(path)
    image = open_fits_image(path)
    try:
        tile = TileSource.of(image.source)
    finally:
        image.close()
    assert tile is not None
    seen = tile.apply(slice(1, 5), slice(2, 4), slice(None),
                      lambda b: (b.data.dtype, b.data.copy(), b.bscale, b.bzero, b.blank), raw=True)
    assert seen[0] == np.dtype(">i2") and np.array_equal(seen[1], raw[1:5, 2:4])
    assert seen[2:] == (0.5, 10.0, -32768)
    first = _open_cube(tile)
    assert _open_cube(tile) is first  # kept open between tiles
    hdu.data = raw + 1
    hdu.writeto(path, overwrite=True)
    os.utime(path, ns=(1, 1))  # a different mtime even on a coarse clock
    try:
        again = tile.apply(slice(0, 6), slice(None), slice(None), lambda b: b.data.copy(), raw=True)
        assert _open_cube(tile) is not first and np.array_equal(again, raw + 1)
    finally:
        close_open_files()


def _tiles_in_flight(dask_scheduler) -> int:  # noqa: ANN001 - runs on the scheduler
    """Tile tasks the scheduler holds that are not finished and released."""
    return sum(1 for key, ts in dask_scheduler.tasks.items() if "run_tile" in str(key)
               and ts.state in ("processing", "waiting", "queued", "no-worker", "memory"))


def test_streamed_tiles_are_bounded_and_cancel(cluster: LocalCluster, root: Path) -> None:
    """``iter_tiles`` (baseline and stacked cubes): at most ``window`` tiles submitted and not consumed;
    each tile equals the local read; cancelling mid-stream cancels the rest on the cluster."""
    from app.compute.backend import select_backend  # noqa: PLC0415
    from app.compute.dask_lane import DaskLane, TileSource  # noqa: PLC0415
    from app.compute.dispatch import JobContext  # noqa: PLC0415
    from app.errors import Cancelled  # noqa: PLC0415
    from app.io.fits_reader import open_fits_image  # noqa: PLC0415
    from tests.api.dask_tiles import row_sums, slow_row_sums  # noqa: PLC0415

    lane = DaskLane(cluster.scheduler_address)
    image = open_fits_image(root / "data" / "a.fits")
    try:
        tile = TileSource.of(image.source)
        reads = [(slice(None), slice(y, y + 5), slice(None)) for y in range(0, 50, 5)]
        ctx = JobContext(select_backend("cpu"), None, 1 << 20)
        seen, in_flight = {}, []
        for index, value in lane.iter_tiles(ctx, tile, reads, slow_row_sums, window=2):
            in_flight.append(lane.client.run_on_scheduler(_tiles_in_flight))
            seen[index] = value
        assert sorted(seen) == list(range(len(reads))) and max(in_flight) <= 2
        for index, (z, y, x) in enumerate(reads):
            assert np.array_equal(seen[index], row_sums(image.source.read(z=z, y=y, x=x)), equal_nan=True)
        ctx = JobContext(select_backend("cpu"), None, 1 << 20)
        with pytest.raises(Cancelled):
            for _ in lane.iter_tiles(ctx, tile, reads, slow_row_sums, window=4):
                ctx.cancel_event.set()
        gone = False
        for _ in range(100):  # the scheduler forgets the cancelled tiles (polled, no timing asserted)
            if lane.client.run_on_scheduler(_tiles_in_flight) == 0:
                gone = True
                break
            threading.Event().wait(0.1)
        assert gone
    finally:
        image.close()
        lane.close()

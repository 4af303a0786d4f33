"""The distributed lane: heavy cube work as Dask tasks over tiles of the cube, data by path.

With ``VISIVO_DASK_SCHEDULER`` set, jobs of operations whose capability row says
``distributable`` get a :class:`DaskLane` on their job context (``ctx.cluster``). The slab
runner (:mod:`app.compute.slab_runner`) then ships each tile — a y-slab with the spectral
axis whole, or a channel block for per-channel statistics — as one Dask task: the task
carries the FITS path, the HDU index, the reader's layout (axis order, BSCALE/BZERO/BLANK)
and the tile's bounds, never the array. The worker opens the file itself (memmap), reads
the tile with the same reader code as the server and runs the same kernel (the compiled one on
the stored data's view where the server would use it; the CuPy twin on a GPU worker, see
:mod:`app.compute.dask_worker`), and the tile's result comes back to the server, which assembles
the maps in order (:meth:`DaskLane.map_tiles`) or, for cube-valued results, writes each tile as
it arrives with a bounded number in flight (:meth:`DaskLane.iter_tiles`). The tiles are the slabs
the local path uses (same chunk budget), so the answers are bit-identical where the same kernel runs.

Progress is the fraction of completed tiles; cancelling the job cancels its futures.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import ApiError, Cancelled
from app.io.fits_reader import CubeSource

log = logging.getLogger("visivo.dask")

Compute = Callable[[np.ndarray], Any]

#: Smallest worker ``memory_limit`` for which the server ships raw tiles to the compiled kernels.
COMPILED_MIN_WORKER_BYTES = 1 << 30

#: Seconds between checks of the job's cancel flag while waiting for tiles.
POLL_SECONDS = 0.1


class ClusterUnavailable(RuntimeError):
    """The configured Dask scheduler cannot be reached (or a local cluster cannot start)."""


class WorkerCannotRead(ApiError):
    """A Dask worker cannot open a dataset's file: the server and the worker do not share the path."""


@dataclass(frozen=True)
class TileSource:
    """What a worker needs to read tiles of a cube itself: the file, the HDU, the reader's layout."""

    path: str
    hdu: int
    index: tuple
    order: tuple[int | None, int, int]
    bscale: float
    bzero: float
    blank: int | None

    @classmethod
    def of(cls, source: CubeSource) -> TileSource | None:
        """The tile source of a file-backed cube (``None`` for cubes held only in memory)."""
        if source.origin is None:
            return None
        path, hdu = source.origin
        return cls(str(path), hdu, source.index, source.order, source.bscale, source.bzero, source.blank)

    def read(self, z: slice, y: slice, x: slice) -> np.ndarray:
        """Open the file (memmap), read one ``(nz, ny, nx)`` float32 block, close it (runs on a worker)."""
        return self.apply(z, y, x, lambda block: block)

    def apply(self, z: slice, y: slice, x: slice, fn: Callable[[Any], Any], *, raw: bool = False) -> Any:
        """``fn(block)`` on this worker: ``block`` the float32 block, or with ``raw`` the stored data's
        :class:`~app.io.fits_reader.RawBlock` view (``x`` whole) for the compiled kernels, whose file
        pages are unmapped again once ``fn`` is done (so the worker holds about one tile of them, not
        the pages of every plane, and copies nothing). The file stays open in the worker's
        :func:`_open_cube` cache, so a job's later tiles skip the header parse."""
        source = _open_cube(self)
        if not raw:
            return fn(source.read(z=z, y=y, x=x))
        block = source.read_raw(z=z, y=y)
        try:
            return fn(block)
        finally:
            source.release(block.data)


#: Files a worker keeps open (memmapped; pages are not held) between tiles, most recently used last.
_OPEN_FILES = 8
_open_lock = threading.Lock()
_open: dict[tuple, tuple[Any, CubeSource]] = {}


def _open_cube(tile: TileSource) -> CubeSource:
    """The worker's reader of ``tile``'s cube, opened once per file version (path, size, mtime).

    Raises :class:`WorkerCannotRead` (naming the path and the worker) when this worker cannot read
    the file: server and workers must share the data path.
    """
    from astropy.io import fits  # noqa: PLC0415

    try:
        if not os.access(tile.path, os.R_OK):
            raise FileNotFoundError(f"no such readable file: {tile.path}")
        stat = os.stat(tile.path)
        key = (tile, stat.st_size, stat.st_mtime_ns)
        with _open_lock:
            if key in _open:
                _open[key] = _open.pop(key)  # most recently used last
                return _open[key][1]
        hdul = fits.open(tile.path, memmap=True, do_not_scale_image_data=True, mode="readonly")
    except OSError as exc:
        raise WorkerCannotRead(
            f"Dask worker {_worker_name()} cannot read {tile.path}: {exc.strerror or exc}. Workers open the "
            "data by path: the data roots (and the output directory, for inflated .fits.gz copies) must be "
            "mounted at the same path on every worker."
        ) from None
    source = CubeSource(hdul[tile.hdu].data, tile.index, tile.order, tile.bscale, tile.bzero, tile.blank)
    with _open_lock:
        _open[key] = (hdul, source)
        while len(_open) > _OPEN_FILES:
            old, _ = _open.pop(next(iter(_open)))
            old.close()
    return source


@dataclass(frozen=True)
class MultiTileSource:
    """The same tile of several cubes of one shape (stacking): ``read`` gives the list of their blocks."""

    tiles: tuple[TileSource, ...]

    def apply(self, z: slice, y: slice, x: slice, fn: Callable[[Any], Any], *, raw: bool = False) -> Any:
        """``fn([block of each cube])`` (float32 blocks; ``raw`` is not supported)."""
        if raw:
            raise ValueError("raw tiles of several cubes are not supported")
        return fn([t.read(z, y, x) for t in self.tiles])


def close_open_files() -> None:
    """Close every file this process keeps open for its tiles (:func:`_open_cube`)."""
    with _open_lock:
        while _open:
            hdul, _ = _open.pop(next(iter(_open)))
            hdul.close()


def _worker_name() -> str:
    """``address (name)`` of the Dask worker running this code, or the host/pid outside a worker."""
    try:
        from distributed import get_worker  # noqa: PLC0415

        worker = get_worker()
        return f"{worker.address} ({worker.name})"
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def run_tile(tile: TileSource | MultiTileSource, z: slice, y: slice, x: slice, compute: Compute,
             gpu: bool = False, raw: bool = False) -> tuple[Any, str, str]:
    """One Dask task: read the tile from the file and apply ``compute`` to it (NumPy in, NumPy out).

    Returns ``(result, kernel, fallback)`` (:func:`app.compute.dask_worker.run_on_worker`).
    """
    from app.compute.dask_worker import run_on_worker  # noqa: PLC0415

    return tile.apply(z, y, x, lambda block: run_on_worker(block, compute, gpu=gpu, raw=raw), raw=raw)


def _tally(ctx: Any, kernel: str, fallback: str) -> None:
    """Count one completed tile in ``ctx.cluster_tiles`` (``{"tiles", "kernels", "fallback"}``)."""
    summary = getattr(ctx, "cluster_tiles", None)
    if summary is None:
        summary = {"tiles": 0, "kernels": {}, "fallback": []}
        ctx.cluster_tiles = summary
    summary["tiles"] += 1
    summary["kernels"][kernel] = summary["kernels"].get(kernel, 0) + 1
    if fallback and fallback not in summary["fallback"]:
        summary["fallback"].append(fallback)


_LOCAL = re.compile(r"^local(?::(\d+))?$")


class DaskLane:
    """A connection to a Dask cluster (an existing scheduler, or a LocalCluster this lane owns).

    Parameters
    ----------
    address
        ``tcp://host:port`` of a running scheduler, or ``local`` / ``local:N`` for a LocalCluster of
        ``N`` worker processes (default: the number of cores) started here and stopped by :meth:`close`.
    timeout_s
        Seconds to wait for the scheduler before giving up with :class:`ClusterUnavailable`.
    min_bytes
        Cube bytes from which the size-gated operations (PV, isosurface) use the cluster (:meth:`worth`).
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0, min_bytes: float = 0.0) -> None:
        try:
            from distributed import Client, LocalCluster  # noqa: PLC0415
        except ImportError:  # pragma: no cover - the `dask` extra is not installed
            raise ClusterUnavailable(
                "VISIVO_DASK_SCHEDULER is set but dask.distributed is not installed: pip install '.[dask]'."
            ) from None
        self.cluster = None
        self.min_bytes = float(min_bytes)
        match = _LOCAL.match(address.strip())
        try:
            if match:
                workers = int(match.group(1) or (os.cpu_count() or 1))
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address="127.0.0.1:0", scheduler_port=0)
                self.client = Client(self.cluster, timeout=timeout_s)
            else:
                self.client = Client(address, timeout=timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            if self.cluster is not None:
                self.cluster.close()
            raise ClusterUnavailable(
                f"Cannot reach the Dask scheduler at {address!r} (VISIVO_DASK_SCHEDULER) within {timeout_s:g} s: "
                f"{exc}. Start it with `dask scheduler` and workers with `dask worker <address>`, fix the "
                "address, or set VISIVO_DASK_FALLBACK=local to run locally."
            ) from None
        self.address = str(self.client.scheduler.address)
        log.info("Dask lane connected to %s", self.address)

    def report(self) -> dict[str, Any]:
        """Scheduler address, workers, threads and GPU resources, for ``/v1/health``."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return {
            "scheduler": self.address,
            "local": self.cluster is not None,
            "workers": len(workers),
            "threads": sum(int(w.get("nthreads", 0)) for w in workers.values()),
            "gpus": sum(int(w.get("resources", {}).get("GPU", 0)) for w in workers.values()),
        }

    def gpus(self) -> float:
        """``GPU`` resources the connected workers advertise (0: a CPU cluster)."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return float(sum(w.get("resources", {}).get("GPU", 0) for w in workers.values()))

    def ships_raw_tiles(self) -> bool:
        """Whether jobs on this cluster may use the compiled kernels on raw tiles: no worker advertises
        a GPU (those take float32 tiles for the CuPy kernels) and every worker's ``memory_limit`` is
        unlimited or at least :data:`COMPILED_MIN_WORKER_BYTES` (numba and LLVM take ~150 MiB of
        each worker process that loads them)."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
        if any(w.get("resources", {}).get("GPU", 0) for w in workers):
            return False
        limits = [int(w.get("memory_limit") or 0) for w in workers]
        return all(limit == 0 or limit >= COMPILED_MIN_WORKER_BYTES for limit in limits)

    def worth(self, nbytes: float) -> bool:
        """Whether work reading ``nbytes`` of cube goes to the cluster (``VISIVO_DASK_MIN_MEGABYTES``);
        used by the operations distributed only where the cube is large (PV, isosurface)."""
        return nbytes >= self.min_bytes

    def map_tiles(self, ctx: Any, tile: TileSource | MultiTileSource, reads: Sequence[tuple[slice, slice, slice]],
                  compute: Compute, *, raw: bool = False, span: tuple[float, float] = (0.0, 1.0)) -> list[Any]:
        """``[compute(read(z, y, x)) for (z, y, x) in reads]`` as Dask tasks, results in order.

        Reports ``completed / total`` tiles as the job's progress (mapped into ``span``); when the job
        is cancelled (or a tile fails) the remaining futures are cancelled and the error is raised
        here. A worker's exception (e.g. :class:`WorkerCannotRead`, a kernel's ``ValueError``) is
        re-raised as is. ``raw``: the tiles are the stored data's views (compiled kernels).
        """
        results: list[Any] = [None] * len(reads)
        for i, value in self.iter_tiles(ctx, tile, reads, compute, raw=raw, span=span):
            results[i] = value
        return results

    def iter_tiles(self, ctx: Any, tile: TileSource | MultiTileSource, reads: Sequence[tuple[slice, slice, slice]],
                   compute: Compute, *, raw: bool = False, window: int | None = None,
                   span: tuple[float, float] = (0.0, 1.0)) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, compute(read(*reads[index])))`` as tiles complete (any order).

        At most ``window`` tiles are submitted and not yet consumed (default: all at once), so that a
        job whose tiles are large (baseline, stacked cubes) holds a bounded number of them on the
        server. Tiles of an operation with a GPU kernel ask for the worker resource ``GPU=1`` when
        the cluster's workers advertise GPUs. Every tile's kernel is tallied in ``ctx.cluster_tiles``.
        """
        gpu = (not raw and getattr(ctx.capability, "gpu_kernel", False) and self.gpus() > 0)
        options: dict[str, Any] = {"resources": {"GPU": 1}} if gpu else {}
        total = len(reads)
        limit = total if window is None else max(1, int(window))
        lo, hi = span
        futures: dict[Any, tuple[int, Any]] = {}
        wake = threading.Event()  # set by the futures' done callbacks (no polling exceptions, no reference cycles)
        submitted = completed = 0

        def submit_next() -> None:
            nonlocal submitted
            z, y, x = reads[submitted]
            future = self.client.submit(run_tile, tile, z, y, x, compute, gpu, raw, pure=False, **options)
            future.add_done_callback(lambda _: wake.set())
            futures[future.key] = (submitted, future)
            submitted += 1

        try:
            while submitted < min(limit, total):
                submit_next()
            while futures:
                if ctx.cancel_event.is_set():
                    raise Cancelled()
                wake.wait(POLL_SECONDS)
                wake.clear()
                for key in [k for k, (_, f) in futures.items() if f.done()]:
                    index, future = futures.pop(key)
                    value, kernel, fallback = future.result()
                    del future
                    _tally(ctx, kernel, fallback)
                    completed += 1
                    ctx.progress(lo + (hi - lo) * completed / total)
                    yield index, value
                    del value
                    if submitted < total:
                        submit_next()
        except BaseException:
            self.client.cancel([f for _, f in futures.values()])
            raise
        finally:  # drop every reference, so that the cluster frees the tiles even if a traceback keeps this frame
            futures.clear()

    def close(self) -> None:
        """Disconnect; stop the LocalCluster if this lane started it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def connect(address: str, *, fallback: str = "", timeout_s: float = 10.0, min_bytes: float = 0.0) -> DaskLane | None:
    """The lane for ``VISIVO_DASK_SCHEDULER`` (``None`` when unset).

    An unreachable scheduler raises :class:`ClusterUnavailable`, unless ``fallback`` is
    ``local``: then the failure is logged and the server runs everything locally.
    """
    if not address.strip():
        return None
    try:
        return DaskLane(address, timeout_s=timeout_s, min_bytes=min_bytes)
    except ClusterUnavailable as exc:
        if fallback.strip().lower() == "local":
            log.warning("%s Falling back to local execution (VISIVO_DASK_FALLBACK=local).", exc)
            return None
        raise

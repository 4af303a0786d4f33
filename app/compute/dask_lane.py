"""The distributed lane: heavy cube work as Dask tasks over tiles of the cube, data by path.

With ``VISIVO_DASK_SCHEDULER`` set, jobs of operations whose capability row says
``distributable`` get a :class:`DaskLane` on their job context (``ctx.cluster``). The slab
runner (:mod:`app.compute.slab_runner`) then ships each tile — a y-slab with the spectral
axis whole, or a channel block for per-channel statistics — as one Dask task: the task
carries the FITS path, the HDU index, the reader's layout (axis order, BSCALE/BZERO/BLANK)
and the tile's bounds, never the array. The worker opens the file itself (memmap), reads
the tile with the same reader code as the server and runs the same CPU kernel, and the
tile's small result maps come back to the server, which assembles them in order. The tiles
are the slabs the local path uses (same chunk budget), so the answers are bit-identical.

Progress is the fraction of completed tiles; cancelling the job cancels its futures.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import ApiError, Cancelled
from app.io.fits_reader import CubeSource

log = logging.getLogger("visivo.dask")

Compute = Callable[[np.ndarray], Any]

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
        from astropy.io import fits  # noqa: PLC0415

        try:
            if not os.access(self.path, os.R_OK):
                raise FileNotFoundError(f"no such readable file: {self.path}")
            hdul = fits.open(self.path, memmap=True, do_not_scale_image_data=True, mode="readonly")
        except OSError as exc:
            raise WorkerCannotRead(
                f"Dask worker {_worker_name()} cannot read {self.path}: {exc.strerror or exc}. Workers open the "
                "data by path: the data roots (and the output directory, for inflated .fits.gz copies) must be "
                "mounted at the same path on every worker."
            ) from None
        try:
            raw = hdul[self.hdu].data
            block = CubeSource(raw, self.index, self.order, self.bscale, self.bzero, self.blank).read(z=z, y=y, x=x)
            del raw
        finally:
            hdul.close()
        return block


def _worker_name() -> str:
    """``address (name)`` of the Dask worker running this code, or the host/pid outside a worker."""
    try:
        from distributed import get_worker  # noqa: PLC0415

        worker = get_worker()
        return f"{worker.address} ({worker.name})"
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def run_tile(tile: TileSource, z: slice, y: slice, x: slice, compute: Compute) -> Any:
    """One Dask task: read the tile from the file and apply ``compute`` to it (NumPy in, NumPy out)."""
    return compute(tile.read(z, y, x))


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
    """

    def __init__(self, address: str, *, timeout_s: float = 10.0) -> None:
        try:
            from distributed import Client, LocalCluster  # noqa: PLC0415
        except ImportError:  # pragma: no cover - the `dask` extra is not installed
            raise ClusterUnavailable(
                "VISIVO_DASK_SCHEDULER is set but dask.distributed is not installed: pip install '.[dask]'."
            ) from None
        self.cluster = None
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

    def map_tiles(self, ctx: Any, tile: TileSource, reads: Sequence[tuple[slice, slice, slice]],
                  compute: Compute) -> list[Any]:
        """``[compute(read(z, y, x)) for (z, y, x) in reads]`` as Dask tasks, results in order.

        Reports ``completed / total`` tiles as the job's progress; when the job is cancelled
        (or a tile fails) the remaining futures are cancelled and the error is raised here.
        A worker's exception (e.g. :class:`WorkerCannotRead`, a kernel's ``ValueError``) is
        re-raised as is.
        """
        futures = [self.client.submit(run_tile, tile, z, y, x, compute, pure=False) for z, y, x in reads]
        position = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        pending = list(futures)
        wake = threading.Event()  # set by the futures' done callbacks (no polling exceptions, no reference cycles)
        for future in futures:
            future.add_done_callback(lambda _: wake.set())
        try:
            while pending:
                if ctx.cancel_event.is_set():
                    raise Cancelled()
                wake.wait(POLL_SECONDS)
                wake.clear()
                done = [f for f in pending if f.done()]
                if not done:
                    continue
                for future in done:
                    results[position[future.key]] = future.result()
                finished = {f.key for f in done}
                pending = [f for f in pending if f.key not in finished]
                ctx.progress((len(futures) - len(pending)) / len(futures))
        except BaseException:
            self.client.cancel(futures)
            raise
        finally:  # drop every reference, so that the cluster frees the tiles even if a traceback keeps this frame
            futures.clear()
            pending.clear()
            position.clear()
        return results

    def close(self) -> None:
        """Disconnect; stop the LocalCluster if this lane started it."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def connect(address: str, *, fallback: str = "", timeout_s: float = 10.0) -> DaskLane | None:
    """The lane for ``VISIVO_DASK_SCHEDULER`` (``None`` when unset).

    An unreachable scheduler raises :class:`ClusterUnavailable`, unless ``fallback`` is
    ``local``: then the failure is logged and the server runs everything locally.
    """
    if not address.strip():
        return None
    try:
        return DaskLane(address, timeout_s=timeout_s)
    except ClusterUnavailable as exc:
        if fallback.strip().lower() == "local":
            log.warning("%s Falling back to local execution (VISIVO_DASK_FALLBACK=local).", exc)
            return None
        raise

"""Two-tier dispatch of compute work: interactive calls never wait behind heavy jobs.

- Interactive work (slices, previews, small reads, noise) runs on its own thread
  pool of ``VISIVO_WORKERS`` threads and takes no slot.
- Heavy work (moments, PV, line width, baseline, stacking, isosurfaces) runs on
  *lanes*. On the CPU backend there is one lane with ``VISIVO_HEAVY_SLOTS`` slots
  (the reference backend's heavy-slot throttle); on the GPU backend one lane per
  device with ``VISIVO_GPU_SLOTS_PER_DEVICE`` slots, and a job goes to the device
  with the fewest outstanding jobs (ties: the device where its cube is resident,
  then the lowest index). More than ``VISIVO_HEAVY_QUEUE_LIMIT`` waiting jobs →
  :class:`~app.errors.Busy` (HTTP 429), never a hang.

Threads rather than processes: NumPy, SciPy and CuPy release the GIL in the
kernels, and memory-mapped cubes are shared without pickling.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from app.compute.backend import Backend
from app.compute.capabilities import Capability
from app.errors import Busy, Cancelled

T = TypeVar("T")


@dataclass
class Lane:
    """A slot pool for heavy jobs: the CPU, or one GPU device."""

    name: str
    capacity: int
    device: int | None = None
    outstanding: int = 0  # running + waiting
    running: int = 0
    completed: int = 0
    semaphore: asyncio.Semaphore | None = field(default=None, repr=False)

    def sem(self) -> asyncio.Semaphore:
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.capacity)
        return self.semaphore


def choose_lane(lanes: Sequence[Lane], preferred_device: int | None = None) -> Lane:
    """The lane with the fewest outstanding jobs; ties go to ``preferred_device``, then lowest index."""
    return min(
        lanes,
        key=lambda lane: (lane.outstanding, 0 if lane.device == preferred_device else 1, lane.device or 0),
    )


class JobContext:
    """What a job sees: its kernels, device, helper threads, progress reporting and cancellation."""

    def __init__(
        self,
        backend: Backend,
        device: int | None,
        chunk_bytes: int,
        cancel_event: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
        capability: Capability | None = None,
        helpers: ThreadPoolExecutor | None = None,
    ) -> None:
        self.backend = backend
        self.device = device
        self.chunk_bytes = chunk_bytes
        self.cancel_event = cancel_event or threading.Event()
        self._progress = progress
        self.capability = capability
        self._helpers = helpers
        #: The distributed lane (:class:`app.compute.dask_lane.DaskLane`) when the executor sends this job's
        #: tiles to a Dask cluster, else ``None``.
        self.cluster: Any = None

    @property
    def on_gpu(self) -> bool:
        return self.device is not None

    def kernels(self, module: str | None = None) -> ModuleType:
        """The kernel module ``module`` (default: the operation's main one) of the tree this job runs on.

        The module must be one the operation's capability row declares, so the row stays the
        one place that says which kernels an operation uses.
        """
        cap = self.capability
        name = module or (cap.module if cap is not None else None)
        if name is None:
            raise LookupError("this job's operation declares no kernel module")
        if cap is not None and name not in cap.kernels:
            raise LookupError(f"kernel module {name!r} is not declared by the operation's capability row")
        if self.cluster is not None and not self.on_gpu:  # resolved on each worker (CuPy on GPU workers)
            from app.compute.dask_worker import TileKernels  # noqa: PLC0415

            return TileKernels(name)  # type: ignore[return-value]
        tree = "gpu_kernels" if self.on_gpu else "cpu_fallback"
        return importlib.import_module(f"{tree}.{name}")

    def compiled(self, module: str) -> ModuleType | None:
        """The compiled CPU fast path ``cpu_fallback.compiled.<module>`` for a CPU job when numba is
        usable, else None (then the job uses :meth:`kernels`, the NumPy oracle). A job on a Dask cluster
        gets None unless the cluster takes raw tiles (``DaskLane.ships_raw_tiles``: no GPU workers, whose
        tiles run the CuPy kernels, and no worker too small to load numba)."""
        if self.on_gpu or (self.cluster is not None and not self.cluster.ships_raw_tiles()):
            return None
        from cpu_fallback.compiled import runtime  # noqa: PLC0415 - sets the numba cache dir first

        return importlib.import_module(f"cpu_fallback.compiled.{module}") if runtime.available() else None

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(x) for x in items]`` on the dispatcher's helper threads (in order; serial without them)."""
        if self._helpers is None or len(items) < 2:
            return [fn(x) for x in items]
        return list(self._helpers.map(fn, items))

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the job's task was cancelled (call between chunks)."""
        if self.cancel_event.is_set():
            raise Cancelled()

    def progress(self, fraction: float) -> None:
        self.check_cancelled()
        if self._progress is not None:
            self._progress(min(1.0, max(0.0, float(fraction))))


class Dispatcher:
    """Runs interactive and heavy work for the API."""

    def __init__(
        self,
        backend: Backend,
        *,
        workers: int,
        heavy_slots: int,
        gpu_slots_per_device: int,
        queue_limit: int,
        chunk_bytes: int,
        lanes: list[Lane] | None = None,
    ) -> None:
        self.backend = backend
        self.chunk_bytes = chunk_bytes
        self.queue_limit = queue_limit
        if lanes is None:
            if backend.is_gpu:
                lanes = [Lane(f"gpu:{d.index}", gpu_slots_per_device, d.index) for d in backend.devices]
            else:
                lanes = [Lane("cpu", heavy_slots)]
        self.lanes = lanes
        self._interactive = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visivo-interactive")
        self._heavy = ThreadPoolExecutor(
            max_workers=sum(lane.capacity for lane in lanes), thread_name_prefix="visivo-heavy"
        )
        #: Threads a running job may fan its own chunks out to (``JobContext.map``).
        self._helpers = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)),
                                           thread_name_prefix="visivo-helper")

    # -- interactive -------------------------------------------------------------------------
    async def run_interactive(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the interactive pool (no slot, never queued behind heavy work)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._interactive, fn, *args)

    async def run_interactive_job(self, job: Callable[[JobContext], T], *, gpu: bool = False,
                                  capability: Capability | None = None) -> T:
        """Run ``job(ctx)`` on the interactive pool; ``gpu`` gives it the least-loaded device (no slot)."""
        device = choose_lane(self.lanes).device if gpu else None
        ctx = JobContext(self.backend, device, self.chunk_bytes, capability=capability, helpers=self._helpers)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._interactive, _run_on_device, job, ctx)

    # -- heavy ------------------------------------------------------------------------------
    def waiting(self) -> int:
        return sum(max(0, lane.outstanding - lane.running) for lane in self.lanes)

    def saturated(self) -> bool:
        """True when every heavy slot is taken and the wait queue is full (a new job would be refused)."""
        all_busy = all(lane.outstanding >= lane.capacity for lane in self.lanes)
        return all_busy and self.waiting() >= self.queue_limit


    async def run_heavy(
        self,
        job: Callable[[JobContext], T],
        *,
        preferred_device: int | None = None,
        cancel_event: threading.Event | None = None,
        progress: Callable[[float], None] | None = None,
        gpu: bool = True,
        capability: Capability | None = None,
    ) -> T:
        """Run ``job(ctx)`` on the least-loaded lane once a slot is free.

        ``gpu=False`` (an operation without a GPU kernel) still takes a slot of a lane
        but gets a CPU context. Cancelling the awaiting coroutine sets the job's cancel
        event and waits for the job to stop at its next chunk, so the slot is only
        released when the work has really stopped.
        """
        if self.saturated():
            raise Busy("Server busy: all heavy compute slots and the wait queue are full; retry shortly.")
        lane = choose_lane(self.lanes, preferred_device)
        lane.outstanding += 1
        ctx = JobContext(
            self.backend,
            lane.device if gpu else None,
            self.chunk_bytes,
            cancel_event=cancel_event,
            progress=progress,
            capability=capability,
            helpers=self._helpers,
        )
        try:
            async with lane.sem():
                lane.running += 1
                try:
                    return await self._execute(job, ctx)
                finally:
                    lane.running -= 1
                    lane.completed += 1
        finally:
            lane.outstanding -= 1

    async def _execute(self, job: Callable[[JobContext], T], ctx: JobContext) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._heavy, _run_on_device, job, ctx)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            ctx.cancel_event.set()
            with contextlib.suppress(BaseException):
                await future
            raise

    def report(self) -> list[dict[str, Any]]:
        return [
            {"lane": lane.name, "device": lane.device, "slots": lane.capacity, "running": lane.running,
             "outstanding": lane.outstanding, "completed": lane.completed}
            for lane in self.lanes
        ]

    def shutdown(self) -> None:
        for pool in (self._interactive, self._heavy, self._helpers):
            pool.shutdown(wait=False, cancel_futures=True)


def _run_on_device(job: Callable[[JobContext], T], ctx: JobContext) -> T:
    """Enter the job's CUDA device (if any) and run it; on CUDA OOM free the pool and retry once with
    quarter-size chunks."""
    if ctx.device is None:
        return job(ctx)
    import cupy  # noqa: PLC0415

    with cupy.cuda.Device(ctx.device):
        try:
            return job(ctx)
        except cupy.cuda.memory.OutOfMemoryError:
            cupy.get_default_memory_pool().free_all_blocks()
            ctx.chunk_bytes = max(1 << 20, ctx.chunk_bytes // 4)
            return job(ctx)

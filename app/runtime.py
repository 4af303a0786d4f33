"""The server's live state, built once at start-up and kept on ``app.state.runtime``.

Everything with a lifetime lives here — sessions, tasks, the product cache, the dispatcher and
its pools, resident GPU cubes, the JS9 image cache, HiPS and SAMP — and routes reach it through
the typed dependencies of :mod:`app.deps`; nothing is created lazily by a router.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.compute.backend import Backend, select_backend
from app.compute.compiled_cpu import start_compiled_kernels
from app.compute.dask_lane import ClusterUnavailable, DaskLane
from app.compute.dask_lane import connect as connect_cluster
from app.compute.dispatch import Dispatcher, JobContext
from app.compute.product_cache import ProductCache
from app.compute.residency import ResidentCubes
from app.compute.slab_runner import upload_cube
from app.io.fits_writer import sweep_partial_files
from app.services import budget
from app.services.hips import HipsConfig, HipsService
from app.services.js9.images import ImageCache
from app.services.samp import SampConfig, SampService
from app.services.sessions import SessionRegistry
from app.services.tasks import TaskRegistry
from app.settings import Settings

VERSION = "0.1.0"


@dataclass
class Runtime:
    settings: Settings
    token: str
    backend: Backend
    dispatcher: Dispatcher
    sessions: SessionRegistry = field(default_factory=SessionRegistry)
    cache: ProductCache = field(default_factory=lambda: ProductCache(64))
    tasks: TaskRegistry = field(default_factory=lambda: TaskRegistry(3600))
    residency: ResidentCubes = field(default_factory=lambda: ResidentCubes(lambda device: 0))
    #: FITS images opened by the JS9 tasks, kept between requests.
    js9_images: ImageCache = field(default_factory=ImageCache)
    #: HiPS surveys, their HTTP client and disk cache (built by :func:`build_runtime`).
    hips: HipsService | None = None
    #: The server's SAMP presence (built by :func:`build_runtime`).
    samp: SampService | None = None
    #: The distributed lane (``VISIVO_DASK_SCHEDULER``), ``None`` when everything runs locally.
    cluster: DaskLane | None = None
    started_at: float = field(default_factory=time.time)
    version: str = VERSION

    def resident_cube(self, dataset: Any) -> Callable[[JobContext], Callable[[], Any] | None]:
        """For a job context: a getter of the dataset's device-resident cube (``None`` on the CPU)."""

        def for_context(ctx: JobContext) -> Callable[[], Any] | None:
            if not ctx.on_gpu:
                return None
            source = dataset.handle.source

            def get() -> Any:
                return self.residency.get_or_upload(
                    ctx.device, dataset.version_key, source.nbytes, lambda: upload_cube(source, ctx.chunk_bytes)
                )

            return get

        return for_context

    def close(self) -> None:
        """Stop everything the runtime started (tasks, pools, hub connection, HTTP clients, files)."""
        self.tasks.cancel_all()
        self.dispatcher.shutdown()
        if self.samp is not None:
            self.samp.close()
        if self.hips is not None:
            self.hips.close()
        self.sessions.close_all()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def roots(self) -> tuple:
        """Readable roots: the data roots plus the output directory (products are re-openable)."""
        roots = list(self.settings.data_root_paths)
        out = self.settings.output_dir.resolve()
        if out not in roots:
            roots.append(out)
        return tuple(roots)


def build_runtime(settings: Settings, token: str, backend: Backend | None = None) -> Runtime:
    """Select the backend and build the dispatcher, registries and cache."""
    backend = backend or select_backend(settings.backend)
    dispatcher = Dispatcher(
        backend,
        workers=settings.workers,
        heavy_slots=settings.effective_heavy_slots,
        gpu_slots_per_device=settings.gpu_slots_per_device,
        queue_limit=settings.heavy_queue_limit,
        chunk_bytes=settings.chunk_megabytes << 20,
    )
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    sweep_partial_files(settings.output_dir)  # .part files of writers killed mid-write
    budget.configure(settings)  # per-request memory/response limits and the gzip cache (app/services/budget.py)
    start_compiled_kernels(settings, backend)  # issue 13: numba threads per heavy job, background warm-up
    totals = {d.index: d.total_memory for d in backend.devices}
    fraction = settings.gpu_memory_fraction
    runtime = Runtime(
        residency=ResidentCubes(lambda device: int(fraction * totals.get(device, 0))),
        settings=settings,
        token=token,
        backend=backend,
        dispatcher=dispatcher,
        cache=ProductCache(settings.product_cache_capacity),
        tasks=TaskRegistry(settings.task_ttl_seconds, settings.task_status_style),
        sessions=SessionRegistry(settings.session_ttl_seconds, settings.max_datasets_per_session),
    )
    runtime.hips = HipsService(HipsConfig.from_settings(settings), runtime.roots)
    runtime.samp = SampService(SampConfig.from_settings(settings), runtime.roots, runtime.sessions)
    try:
        runtime.cluster = connect_cluster(settings.dask_scheduler, fallback=settings.dask_fallback,
                                          timeout_s=settings.dask_connect_timeout_seconds,
                                          min_bytes=settings.dask_min_megabytes * (1 << 20))
    except ClusterUnavailable:
        runtime.close()
        raise
    return runtime

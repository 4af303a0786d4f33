"""Health and session statistics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from app.deps import RuntimeDep
from app.errors import NotFound
from app.operations.http import STANDARD_ERRORS, respond
from app.operations.models import Envelope
from app.operations.registry import capability_report
from app.responses import ok
from app.services.datasets import dataset_summary

router = APIRouter(prefix="/v1", tags=["meta"], responses=STANDARD_ERRORS)


class DeviceReport(BaseModel):
    """One GPU, queried now."""

    index: int = Field(description="CUDA device index.")
    name: str = Field(description="Device name.")
    total_memory: int = Field(description="Device memory (bytes).")
    free_memory: int = Field(description="Free device memory now (bytes).")


class LaneReport(BaseModel):
    """One heavy-compute lane (a GPU, or the CPU)."""

    lane: str = Field(description="Lane name (`gpu0`, `cpu` …).")
    device: int | None = Field(description="CUDA device index, null for the CPU lane.")
    slots: int = Field(description="Heavy jobs the lane runs at once.")
    running: int = Field(description="Heavy jobs running now.")
    outstanding: int = Field(description="Heavy jobs running or waiting for a slot.")
    completed: int = Field(description="Heavy jobs finished since start-up.")


class ClusterReport(BaseModel):
    """The Dask cluster of the distributed lane (``VISIVO_DASK_SCHEDULER``)."""

    scheduler: str = Field(description="Scheduler address (`tcp://host:port`).")
    local: bool = Field(description="A LocalCluster started with the server (`local` / `local:N`).")
    workers: int = Field(description="Workers connected now.")
    threads: int = Field(description="Worker threads, over every worker.")
    gpus: int = Field(description="`GPU` resources the workers advertise (`--resources GPU=1`).")


class CapabilityRow(BaseModel):
    """One row of the capability table: how an operation runs."""

    module: str | None = Field(description="Main kernel module (null: no kernel, e.g. file reads).")
    kernels: list[str] = Field(description="Kernel modules the operation calls.")
    gpu_kernel: bool = Field(description="The operation runs its kernels on the GPU when the backend has one.")
    no_gpu_reason: str = Field(description="Why it runs on the CPU (empty when it has a GPU kernel).")
    tier: str = Field(description="`interactive` (never queued behind heavy work) or `heavy` (slot-gated, task).")
    chunking: str = Field(description="`y-slab`, `channel`, `cube` or `none`.")
    bytes_per_voxel: float = Field(description="Working memory per input voxel of a chunk (bytes, estimate).")
    note: str = Field(description="One line about the operation.")
    distributable: bool = Field(False, description="Its tiles run on the Dask cluster when one is configured.")
    parity_rtol: float | None = Field(description="GPU-vs-CPU relative tolerance of the main kernel module.")
    parity_atol: float | None = Field(description="GPU-vs-CPU absolute tolerance (data unit).")


class HealthResponse(Envelope):
    """Liveness and capacity (every field of the reference example, live values)."""

    ok: bool = Field(description="Always true while the server answers.")
    version: str = Field(description="Server version.")
    backend: str = Field(description="Compute backend: `gpu` (CuPy) or `cpu` (NumPy/SciPy).")
    backend_reason: str = Field(description="Why this backend was chosen (e.g. why the GPU is unavailable).")
    devices: list[DeviceReport] = Field(description="GPUs in use (empty on the CPU backend).")
    workers: int = Field(description="Threads of the interactive pool.")
    heavy_slots: int = Field(description="Heavy jobs run at once, over every lane.")
    gpu_slots_per_device: int = Field(description="Heavy slots per GPU (0 on the CPU backend).")
    lanes: list[LaneReport] = Field(description="Heavy-compute lanes and their load.")
    active_sessions: int = Field(description="Sessions open now.")
    product_cache_entries: int = Field(description="Answers in the product cache.")
    product_cache_capacity: int = Field(description="Most answers the product cache keeps (LRU).")
    product_cache_hits: int = Field(description="Answers served from the product cache since start-up.")
    task_registry_entries: int = Field(description="Async tasks known (any state).")
    running_tasks: int = Field(description="Async tasks running now.")
    task_ttl_enabled: bool = Field(description="Finished tasks expire.")
    task_ttl_seconds: float = Field(description="Seconds a finished task is kept (s).")
    uptime_seconds: float = Field(description="Seconds since start-up (s).")
    capabilities: dict[str, CapabilityRow] = Field(description="The capability table: operation name → row.")
    cluster: ClusterReport | None = Field(None, description="The Dask cluster; null when everything runs locally.")


class SessionStats(Envelope):
    """Aggregate session-registry statistics."""

    active_sessions: int = Field(description="Sessions open now.")
    open_datasets: int = Field(description="Datasets open over every session.")
    datasets_by_kind: dict[str, int] = Field(description="Open datasets per kind (`image`, `cube`, `catalogue` …).")
    datasets_opened_total: int = Field(description="Datasets opened since start-up.")
    oldest_session_age_seconds: float = Field(description="Age of the oldest open session (s).")


class DatasetSummary(BaseModel):
    """One open dataset of a session."""

    dataset_id: str = Field(description="Dataset id (`ds_…`).")
    kind: str = Field(description="`image`, `cube`, `catalogue` or `vbt`.")
    path: str = Field(description="File the dataset was opened from.")
    width: int = Field(description="Columns (pixels; 0 for tables).")
    height: int = Field(description="Rows (pixels; 0 for tables).")
    depth: int = Field(description="Channels (0 for images and tables).")


class SessionDatasets(Envelope):
    """The datasets open in one session."""

    session_id: str = Field(description="The session.")
    datasets: list[DatasetSummary] = Field(description="Its open datasets.")


@router.get("/health", response_model=HealthResponse)
async def health(runtime: RuntimeDep):  # noqa: ANN201
    """Liveness and capacity: every field of the reference example, live values."""
    runtime.tasks.expire()
    settings = runtime.settings
    body: dict[str, Any] = ok(
        ok=True,
        version=runtime.version,
        backend=runtime.backend.name,
        backend_reason=runtime.backend.reason,
        devices=runtime.backend.device_report(),
        workers=settings.workers,
        heavy_slots=settings.effective_heavy_slots,
        gpu_slots_per_device=settings.gpu_slots_per_device if runtime.backend.is_gpu else 0,
        lanes=runtime.dispatcher.report(),
        active_sessions=runtime.sessions.active_count(),
        product_cache_entries=len(runtime.cache),
        product_cache_capacity=runtime.cache.capacity,
        product_cache_hits=runtime.cache.hits,
        task_registry_entries=len(runtime.tasks),
        running_tasks=runtime.tasks.running(),
        task_ttl_enabled=settings.task_ttl_seconds > 0,
        task_ttl_seconds=settings.task_ttl_seconds,
        uptime_seconds=round(time.time() - runtime.started_at, 3),
        capabilities=capability_report(),
        cluster=runtime.cluster.report() if runtime.cluster is not None else None,
    )
    return respond(HealthResponse, body)


@router.get("/sessions", response_model=SessionStats)
async def sessions(runtime: RuntimeDep):  # noqa: ANN201
    """Aggregate session-registry statistics."""
    return respond(SessionStats, ok(runtime.sessions.stats()))


@router.get("/sessions/{session_id}/datasets", response_model=SessionDatasets)
async def session_datasets(session_id: str, runtime: RuntimeDep):  # noqa: ANN201
    """The datasets open in one session (404 for an unknown session)."""
    try:
        session = runtime.sessions.get(session_id)
    except NotFound:
        raise NotFound("Session not found.") from None
    return respond(SessionDatasets, ok(session_id=session.session_id,
                                       datasets=[dataset_summary(d) for d in session.datasets.values()]))

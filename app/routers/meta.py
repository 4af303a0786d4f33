"""Health and session statistics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends

from app.deps import get_runtime
from app.errors import NotFound
from app.operations.registry import capability_report
from app.responses import ok
from app.runtime import Runtime
from app.services.datasets import dataset_summary

router = APIRouter(prefix="/v1", tags=["meta"])


@router.get("/health")
async def health(runtime: Runtime = Depends(get_runtime)) -> dict:
    """Liveness and capacity: every field of the reference example, live values."""
    runtime.tasks.expire()
    settings = runtime.settings
    return ok(
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
    )


@router.get("/sessions")
async def sessions(runtime: Runtime = Depends(get_runtime)) -> dict:
    """Aggregate session-registry statistics."""
    return ok(runtime.sessions.stats())


@router.get("/sessions/{session_id}/datasets")
async def session_datasets(session_id: str, runtime: Runtime = Depends(get_runtime)) -> dict:
    """The datasets open in one session (404 for an unknown session)."""
    try:
        session = runtime.sessions.get(session_id)
    except NotFound:
        raise NotFound("Session not found.") from None
    return ok(session_id=session.session_id, datasets=[dataset_summary(d) for d in session.datasets.values()])

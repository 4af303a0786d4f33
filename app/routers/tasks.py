"""Asynchronous tasks: create (moment, PV), poll, cancel."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.deps import get_runtime, session_id_of
from app.routers.cube import PvRequest, pv_operation
from app.routers.products import IsosurfaceRequest, MomentRequest, isosurface_operation, moment_operation
from app.routers.spectral import (
    BaselineRequest,
    LinewidthRequest,
    StackRequest,
    baseline_operation,
    linewidth_operation,
    stack_operation,
)
from app.runtime import Runtime
from app.services.operations import start_task

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.post("/moment")
async def task_moment(body: MomentRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue a moment map; same body as ``/v1/products/moment``."""
    return start_task(runtime, moment_operation(runtime, request, body))


@router.post("/pv")
async def task_pv(body: PvRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue a PV diagram; same body as ``/v1/cube/pv``."""
    return start_task(runtime, pv_operation(runtime, request, body))


@router.post("/linewidth")
async def task_linewidth(body: LinewidthRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue a line-width map; same body as ``/v1/spectral/linewidth``."""
    return start_task(runtime, linewidth_operation(runtime, request, body))


@router.post("/baseline")
async def task_baseline(body: BaselineRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue a baseline subtraction; body as ``/v1/spectral/baseline/...`` plus ``session_id``/``dataset_id``."""
    if not body.session_id or not body.dataset_id:
        from app.errors import InvalidRequest  # noqa: PLC0415

        raise InvalidRequest("session_id and dataset_id are required in the body.")
    return start_task(runtime, baseline_operation(runtime, request, body.session_id, body.dataset_id, body))


@router.post("/stack")
async def task_stack(body: StackRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue a stack; same body as ``/v1/spectral/stack``."""
    return start_task(runtime, stack_operation(runtime, request, body))


@router.post("/isosurface")
async def task_isosurface(body: IsosurfaceRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Queue an isosurface; same body as ``/v1/products/isosurface``."""
    return start_task(runtime, isosurface_operation(runtime, request, body))


@router.get("/{task_id}")
async def task_status(task_id: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Status, progress (0–1) and, when done, the full result."""
    return runtime.tasks.describe(runtime.tasks.get(task_id, session_id_of(request)))


@router.delete("/{task_id}")
async def task_delete(task_id: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Cancel (the job stops at its next chunk and frees its slot) and remove."""
    record = await runtime.tasks.delete(task_id, session_id_of(request))
    return {"valid": True, "error": "", "task_id": record.task_id, "deleted": True}

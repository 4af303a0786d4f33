"""Opening FITS images and cubes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from app.deps import dataset_for, get_runtime, session_id_of
from app.responses import ok
from app.runtime import Runtime
from app.services.datasets import open_dataset

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str


@router.post("/open")
async def open_fits(body: OpenRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Open a FITS image or cube (2-D, 3-D, 4-D with degenerate axes, gzip) in the caller's session."""
    dataset = await runtime.dispatcher.run_interactive(
        open_dataset, runtime.sessions, runtime.roots, body.path, session_id_of(request)
    )
    return ok(dataset.info, dataset_id=dataset.dataset_id, session_id=dataset.session_id, path=str(dataset.path))


@router.get("/{dataset_id}")
async def dataset_info(dataset_id: str, request: Request) -> dict:
    """The open response of a dataset of the caller's session (404 for unknown or foreign)."""
    dataset = dataset_for(request, dataset_id)
    return ok(dataset.info, dataset_id=dataset.dataset_id, session_id=dataset.session_id, path=str(dataset.path))


@router.delete("/{dataset_id}")
async def close_dataset(dataset_id: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Close a dataset of the caller's session and free its file handle."""
    dataset = dataset_for(request, dataset_id)
    runtime.sessions.remove_dataset(dataset)
    runtime.residency.evict_prefix(f"{dataset.dataset_id}:")  # free its device-resident copy, if any
    return ok(dataset_id=dataset_id, closed=True)

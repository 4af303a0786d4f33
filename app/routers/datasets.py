"""An open dataset: inspect and close (opening is the ``dataset_open`` operation)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field

from app.deps import RuntimeDep, dataset_for
from app.operations.defs._files import OpenResponse
from app.operations.http import STANDARD_ERRORS, respond
from app.operations.models import Envelope
from app.services.datasets import open_answer

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=STANDARD_ERRORS)


class ClosedResponse(Envelope):
    """A dataset was closed and its file handle (and GPU copy) freed."""

    dataset_id: str = Field(description="The closed dataset.")
    closed: bool = Field(True, description="Always true.")


@router.get("/{dataset_id}", response_model=OpenResponse)
async def dataset_info(dataset_id: str, request: Request):  # noqa: ANN201
    """The open response of a dataset of the caller's session (404 for unknown or foreign)."""
    dataset = dataset_for(request, dataset_id)
    return respond(OpenResponse, {"valid": True, "error": "", **open_answer(dataset)})


@router.delete("/{dataset_id}", response_model=ClosedResponse)
async def close_dataset(dataset_id: str, request: Request, runtime: RuntimeDep):  # noqa: ANN201
    """Close a dataset of the caller's session and free its file handle."""
    dataset = dataset_for(request, dataset_id)
    runtime.sessions.remove_dataset(dataset)
    runtime.residency.evict_prefix(f"{dataset.dataset_id}:")  # free its device-resident copy, if any
    return respond(ClosedResponse, {"valid": True, "error": "", "dataset_id": dataset_id, "closed": True})

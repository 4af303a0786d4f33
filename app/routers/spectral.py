"""Spectral results kept per dataset (the spectral operations themselves are in the registry)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.deps import dataset_for
from app.errors import NotFound
from app.operations.defs.linewidth import LinewidthResponse
from app.operations.http import STANDARD_ERRORS, respond

router = APIRouter(prefix="/v1/spectral", tags=["spectral"], responses=STANDARD_ERRORS)


@router.get("/linewidth/{dataset_id}", response_model=LinewidthResponse)
async def linewidth_last(dataset_id: str, request: Request):  # noqa: ANN201
    """The last line-width result computed for this dataset (404 if none yet)."""
    result = dataset_for(request, dataset_id).results.get("linewidth")
    if result is None:
        raise NotFound(f"No line-width result for dataset {dataset_id}.")
    return respond(LinewidthResponse, result)

"""Catalogue routes: open, query (filtered, sorted, paged) and the legacy subset."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.deps import dataset_for, get_runtime, session_id_of
from app.responses import ok
from app.runtime import Runtime
from app.services import catalogue

router = APIRouter(prefix="/v1/catalogue", tags=["catalogue"])


class OpenCatalogueRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str | None = None
    paths: list[str] | None = None
    format: str | None = None


class FilterItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    field: str
    op: str = Field(validation_alias=AliasChoices("op", "operator"))
    value: Any = None


class QueryRequest(BaseModel):
    """The catalogue query; ``/v1/vbt/query`` takes the same shape."""

    model_config = ConfigDict(extra="allow")
    dataset_id: str
    limit: int | None = None
    offset: int = Field(0, ge=0)
    filters: list[FilterItem] = Field(default_factory=list)
    sort_field: str | None = None
    sort_direction: str | None = None
    fields: list[str] | None = None


class SubsetRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_id: str
    max_rows: int | None = None


@router.post("/open")
async def open_catalogue(body: OpenCatalogueRequest, request: Request,
                         runtime: Runtime = Depends(get_runtime)) -> dict:
    """Open a catalogue (CSV, VOTable, FITS table, IPAC, ASCII; ``paths`` concatenates files)."""
    dataset = await runtime.dispatcher.run_interactive(
        lambda: catalogue.open_catalogue(runtime.sessions, runtime.roots, path=body.path, paths=body.paths,
                                         fmt=body.format, session_id=session_id_of(request)))
    return ok(dataset.info, dataset_id=dataset.dataset_id, session_id=dataset.session_id, path=str(dataset.path))


@router.post("/query")
async def query(body: QueryRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """AND-combined filters, optional sort, one page of rows and the filtered ``total_rows``."""
    dataset = dataset_for(request, body.dataset_id)
    filters = catalogue.to_filters(body.filters)
    return ok(await runtime.dispatcher.run_interactive(
        lambda: catalogue.query_catalogue(dataset, filters=filters, sort_field=body.sort_field,
                                          sort_direction=body.sort_direction, limit=body.limit,
                                          offset=body.offset, fields=body.fields)))


@router.post("/subset")
async def subset(body: SubsetRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Legacy: the first ``max_rows`` rows, unfiltered."""
    dataset = dataset_for(request, body.dataset_id)
    return ok(await runtime.dispatcher.run_interactive(
        lambda: catalogue.subset_catalogue(dataset, max_rows=body.max_rows)))

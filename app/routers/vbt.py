"""VisIVO Binary Table routes: open (optionally a volume as a cube), query and the legacy subset."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from app.deps import dataset_for, get_runtime, session_id_of
from app.responses import ok
from app.routers.catalogue import QueryRequest
from app.runtime import Runtime
from app.services import vbt
from app.services.catalogue import to_filters

router = APIRouter(prefix="/v1/vbt", tags=["vbt"])


class OpenVbtRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    path: str
    as_cube: bool = False
    field: str | None = None


class VbtQueryRequest(QueryRequest):
    compression: str | None = None


class VbtSubsetRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_id: str
    max_rows: int | None = None
    fields: list[str] | None = None
    compression: str | None = None


@router.post("/open")
async def open_vbt(body: OpenVbtRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Open ``X.bin`` / ``X.bin.head``; ``as_cube`` opens one field of a volume as a cube dataset."""
    dataset = await runtime.dispatcher.run_interactive(
        lambda: vbt.open_vbt(runtime.sessions, runtime.roots, path=body.path, session_id=session_id_of(request),
                             cube=body.as_cube, field_name=body.field))
    return ok(dataset.info, dataset_id=dataset.dataset_id, session_id=dataset.session_id, path=str(dataset.path))


@router.post("/query")
async def query(body: VbtQueryRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """The catalogue query on a VBT; ``columns`` maps field → base64 little-endian float64."""
    dataset = dataset_for(request, body.dataset_id)
    filters = to_filters(body.filters)
    return ok(await runtime.dispatcher.run_interactive(
        lambda: vbt.query_vbt(dataset, filters=filters, sort_field=body.sort_field,
                              sort_direction=body.sort_direction, limit=body.limit, offset=body.offset,
                              fields=body.fields, compression=body.compression)))


@router.post("/subset")
async def subset(body: VbtSubsetRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Legacy: the first ``max_rows`` rows of every field, unfiltered."""
    dataset = dataset_for(request, body.dataset_id)
    return ok(await runtime.dispatcher.run_interactive(
        lambda: vbt.subset_vbt(dataset, max_rows=body.max_rows, fields=body.fields,
                               compression=body.compression)))

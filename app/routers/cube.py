"""Cube routes: preview, slice, sub-volume (interactive), noise (interactive) and PV (heavy)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from app.deps import dataset_for, get_runtime
from app.io.spectral import velocity_options
from app.runtime import Runtime
from app.services import cube_reads, noise, pv
from app.services.encoding import check_compression
from app.services.operations import Operation, run_sync

router = APIRouter(prefix="/v1/cube", tags=["cube"])


class DatasetRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_id: str
    compression: str | None = None


class PreviewRequest(DatasetRequest):
    downsample: int = 1


class SliceRequest(DatasetRequest):
    axis: str = "z"
    index: int = 0


class RegionRequest(DatasetRequest):
    """Inclusive pixel bounds; ``channel_start/channel_end`` and ``z0/z1`` are synonyms."""

    x0: int | None = None
    x1: int | None = None
    y0: int | None = None
    y1: int | None = None
    z0: int | None = None
    z1: int | None = None
    channel_start: int | None = None
    channel_end: int | None = None

    def channels(self) -> tuple[int | None, int | None]:
        start = self.channel_start if self.channel_start is not None else self.z0
        end = self.channel_end if self.channel_end is not None else self.z1
        return start, end


class PvRequest(DatasetRequest):
    vertices: list[list[float]] | None = None
    points_ra_dec: list[list[float]] | None = None
    width_pixels: int = Field(1, ge=1, le=1001)
    rest_freq_hz: float | None = None
    velocity_convention: str | None = None


@router.post("/preview")
async def preview(body: PreviewRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Strided decimation of the whole cube (``ceil(n/s)`` per axis)."""
    dataset = dataset_for(request, body.dataset_id)
    comp = check_compression(body.compression)
    return {"valid": True, "error": "", **await runtime.dispatcher.run_interactive(
        lambda: cube_reads.preview(dataset, downsample=body.downsample, compression=comp))}


@router.post("/slice")
async def slice_(body: SliceRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """One plane along x, y or z."""
    dataset = dataset_for(request, body.dataset_id)
    comp = check_compression(body.compression)
    return {"valid": True, "error": "", **await runtime.dispatcher.run_interactive(
        lambda: cube_reads.slice_plane(dataset, axis=body.axis, index=body.index, compression=comp))}


@router.post("/subvolume")
async def subvolume(body: RegionRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Inclusive, clamped sub-volume."""
    dataset = dataset_for(request, body.dataset_id)
    comp = check_compression(body.compression)
    z0, z1 = body.channels()
    return {"valid": True, "error": "", **await runtime.dispatcher.run_interactive(
        lambda: cube_reads.subvolume(dataset, x0=body.x0, x1=body.x1, y0=body.y0, y1=body.y1, z0=z0, z1=z1,
                                     compression=comp))}


@router.post("/noise")
async def cube_noise(body: RegionRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Per-channel MAD and σ over a region and channel range."""
    dataset = dataset_for(request, body.dataset_id)
    z0, z1 = body.channels()
    bounds = {"x0": body.x0, "x1": body.x1, "y0": body.y0, "y1": body.y1, "z0": z0, "z1": z1}
    op = Operation("noise", [dataset], bounds, job=lambda ctx: noise.channel_noise(ctx, dataset, **bounds))
    return await run_sync(runtime, op)


def pv_operation(runtime: Runtime, request: Request, body: PvRequest) -> Operation:
    """The PV operation for a request (shared by the sync route and the task route)."""
    dataset = dataset_for(request, body.dataset_id)
    comp = check_compression(body.compression)
    vertices = pv.path_vertices(dataset, vertices=body.vertices, points_ra_dec=body.points_ra_dec)
    params = {"vertices": vertices.round(9).tolist(), "width": body.width_pixels, "compression": comp,
              **velocity_options(body)}
    resident = runtime.resident_cube(dataset)
    return Operation(
        "pv", [dataset], params,
        job=lambda ctx: pv.pv_diagram(ctx, dataset, vertices_px=vertices, width_pixels=body.width_pixels,
                                  compression=comp, resident=resident(ctx), **velocity_options(body)),
    )


@router.post("/pv")
async def pv_route(body: PvRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Position–velocity diagram along a polyline (rows = channels, columns = positions)."""
    return await run_sync(runtime, pv_operation(runtime, request, body))

"""Products: moment maps (sync) — heavy tier, cached."""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from app.deps import dataset_for, get_runtime
from app.errors import InvalidRequest
from app.io.spectral import velocity_options
from app.runtime import Runtime
from app.services import isosurface as iso
from app.services import moments
from app.services.cube_reads import clamp_range, require_cube
from app.services.encoding import check_compression
from app.services.operations import Operation, run_sync

router = APIRouter(prefix="/v1/products", tags=["products"])


class MomentRequest(BaseModel):
    """``moment_order`` (client) and ``order`` (reference) are synonyms."""

    model_config = ConfigDict(extra="allow")
    dataset_id: str
    order: int | None = None
    moment_order: int | None = None
    channel_start: int | None = None
    channel_end: int | None = None
    convention: str = "reference"
    mask_enabled: bool = False
    threshold_value: float | None = None
    threshold: float | None = None
    rms: float | None = None
    snr: float = Field(3.0, gt=0)
    includepix: list[float] | float | None = None
    excludepix: list[float] | float | None = None
    rest_freq_hz: float | None = None
    velocity_convention: str | None = None
    save: bool = False
    compression: str | None = None


def _pix_range(values: list[float] | float | None, name: str) -> tuple[float, ...] | None:
    """CASA includepix/excludepix as given (``[-1]``/``-1`` none, ``[x]`` means ``[-|x|, |x|]``, ``[lo, hi]``)."""
    if values is None:
        return None
    items = [values] if isinstance(values, (int, float)) else list(values)
    if not 1 <= len(items) <= 2 or not all(np.isfinite(v) for v in items):
        raise InvalidRequest(f"{name} must be a single value or [lo, hi].")
    return tuple(float(v) for v in items)


def moment_operation(runtime: Runtime, request: Request, body: MomentRequest) -> Operation:
    """Validate a moment request and describe it as an operation (sync route and task route)."""
    dataset = dataset_for(request, body.dataset_id)
    source = require_cube(dataset)
    order = body.moment_order if body.moment_order is not None else body.order
    if order is None:
        raise InvalidRequest("Missing moment order ('order' or 'moment_order').")
    convention = body.convention.lower()
    if convention not in ("reference", "casa"):
        raise InvalidRequest("convention must be 'reference' or 'casa'.")
    allowed = moments.CASA_ORDERS if convention == "casa" else moments.REFERENCE_ORDERS
    if order not in allowed:
        raise InvalidRequest(f"Unsupported moment order {order} for the {convention} convention "
                             f"(supported: {', '.join(map(str, allowed))}).")
    nz = source.shape[0]
    if body.channel_start is not None and body.channel_end is not None and body.channel_start > body.channel_end:
        raise InvalidRequest("Invalid channel range.")
    c0, c1 = clamp_range(body.channel_start, body.channel_end, nz, "channel")
    threshold = moments.resolve_threshold(threshold=body.threshold, mask_enabled=body.mask_enabled,
                                          threshold_value=body.threshold_value, rms=body.rms, snr=body.snr)
    include = _pix_range(body.includepix, "includepix")
    exclude = _pix_range(body.excludepix, "excludepix")
    if convention == "casa" and threshold is not None and include is None:
        include = (threshold, float(np.finfo(np.float32).max))
    if include is not None and exclude is not None:
        raise InvalidRequest("Give includepix or excludepix, not both (CASA rule).")
    params = moments.MomentParams(order, convention, c0, c1, threshold if convention == "reference" else None,
                                  include, exclude, **velocity_options(body))
    comp = check_compression(body.compression)
    key = {**params.__dict__, "save": body.save, "compression": comp}
    op_name = "moment_casa" if convention == "casa" else "moment"
    resident = runtime.resident_cube(dataset)
    output_dir = runtime.settings.output_dir
    return Operation(op_name, [dataset], key, job=lambda ctx: moments.moment_product(
        ctx, dataset, params, save=body.save, output_dir=output_dir, compression=comp, resident=resident(ctx)))


@router.post("/moment")
async def moment(body: MomentRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Moment map over an inclusive channel range (see the order table in the README)."""
    return await run_sync(runtime, moment_operation(runtime, request, body))


class IsosurfaceRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_id: str
    threshold: float
    step: int = Field(1, ge=1, le=64)
    compression: str | None = None


def isosurface_operation(runtime: Runtime, request: Request, body: IsosurfaceRequest) -> Operation:
    dataset = dataset_for(request, body.dataset_id)
    require_cube(dataset)
    comp = check_compression(body.compression)
    resident = runtime.resident_cube(dataset)
    return Operation("isosurface", [dataset], {"threshold": body.threshold, "step": body.step, "compression": comp},
                     job=lambda ctx: iso.isosurface(ctx, dataset, threshold=body.threshold, step=body.step,
                                                    compression=comp, resident=resident(ctx)))


@router.post("/isosurface")
async def isosurface(body: IsosurfaceRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Marching-cubes mesh at ``threshold`` (voxel coordinates; VTK ``3,i,j,k`` polygons)."""
    return await run_sync(runtime, isosurface_operation(runtime, request, body))

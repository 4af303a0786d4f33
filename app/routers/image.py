"""Image routes: a preview within ``max_longest_side`` and the full image, as RGBA PNG or float32."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from app.deps import dataset_for, get_runtime
from app.responses import ok
from app.runtime import Runtime
from app.services.encoding import check_compression
from app.services.image_preview import image_payload

router = APIRouter(prefix="/v1/image", tags=["image"])


class ImageRequest(BaseModel):
    """Rendering options; ``format`` is ``png`` (default, ``png_base64``) or ``float32`` (``data_base64``)."""

    model_config = ConfigDict(extra="allow")
    dataset_id: str
    channel: int | None = None
    format: str | None = None
    stretch: str | None = None
    percentile: float | None = None
    colormap: str | None = None
    vmin: float | None = None
    vmax: float | None = None
    origin: str | None = None
    compression: str | None = None


class PreviewRequest(ImageRequest):
    max_longest_side: int = Field(1024, ge=1)


async def _render(request: Request, runtime: Runtime, body: ImageRequest, cap: int | None) -> dict:
    dataset = dataset_for(request, body.dataset_id)
    comp = check_compression(body.compression)
    return ok(await runtime.dispatcher.run_interactive(
        lambda: image_payload(dataset, max_longest_side=cap, channel=body.channel, fmt=body.format,
                              stretch=body.stretch, percentile=body.percentile, colormap_name=body.colormap,
                              vmin=body.vmin, vmax=body.vmax, origin=body.origin, compression=comp,
                              max_response_bytes=runtime.settings.max_response_mb << 20)))


@router.post("/preview")
async def preview(body: PreviewRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Nearest-neighbour preview whose longest side is at most ``max_longest_side``."""
    return await _render(request, runtime, body, body.max_longest_side)


@router.post("/full")
async def full(body: ImageRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """The whole image (or cube channel), no size cap."""
    return await _render(request, runtime, body, None)

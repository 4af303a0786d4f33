"""Rendered images: a preview within a size and the full image, as RGBA PNG or float32."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.operations.base import Call, Operation, Plan, Route
from app.operations.models import DatasetRequest, ProductEnvelope, example
from app.services.encoding import check_compression
from app.services.image_preview import image_payload


class ImageRequest(DatasetRequest):
    """Rendering options; `format` is `png` (default, `png_base64`) or `float32` (`data_base64`)."""

    model_config = example(dataset_id="ds_0123456789ab", channel=28, stretch="asinh", colormap="viridis")
    channel: int | None = Field(None, description="Cube channel to render (default 0).")
    format: str | None = Field(None, description="`png` (RGBA PNG) or `float32` (raw values).")
    stretch: str | None = Field(None, description="asinh (default), linear, sqrt, log, sinh, squared, histeq.")
    percentile: float | None = Field(None, description="Central percentile interval for the limits (default 99.5).")
    colormap: str | None = Field(None, description="gray (default), viridis, inferno, magma, plasma, hot, "
                                                   "cubehelix; `_r` reverses.")
    vmin: float | None = Field(None, description="Lower display limit (data unit).")
    vmax: float | None = Field(None, description="Upper display limit (data unit).")
    origin: str | None = Field(None, description="`lower` (default: FITS row 0 at the bottom) or `upper`.")


class PreviewImageRequest(ImageRequest):
    """A nearest-neighbour preview whose longest side is at most `max_longest_side`."""

    max_longest_side: int = Field(1024, ge=1, description="Longest side of the preview (pixels).")


class ImageResponse(ProductEnvelope):
    """The image as PNG (`png_base64`) or float32 (`data_base64`)."""

    width: int = Field(description="Columns of the answer (pixels).")
    height: int = Field(description="Rows of the answer (pixels).")
    format: str | None = Field(None, description="`png` or `float32`.")
    png_base64: str | None = Field(None, description="RGBA PNG, base64.")
    data_base64: str | None = Field(None, description="float32 values, base64, row 0 = FITS y 0.")
    is_preview: bool | None = Field(None, description="The answer is decimated.")
    preview_scale_factor: float | None = Field(None, description="Full size / answer size.")
    full_width: int | None = Field(None, description="Columns of the full image.")
    full_height: int | None = Field(None, description="Rows of the full image.")


_CAPABILITY = Capability(
    kernels=(), tier="interactive", gpu_kernel=False,
    no_gpu_reason="a strided read plus a colour map of one plane: I/O- and encoder-bound",
)


def _plan(call: Call, body: ImageRequest, cap: int | None) -> Plan:
    dataset = call.dataset(body.dataset_id)
    comp = check_compression(body.compression)
    return Plan([dataset], {}, job=lambda ctx: image_payload(
        dataset, max_longest_side=cap, channel=body.channel, fmt=body.format, stretch=body.stretch,
        percentile=body.percentile, colormap_name=body.colormap, vmin=body.vmin, vmax=body.vmax,
        origin=body.origin, compression=comp))


class ImagePreview(Operation):
    """Nearest-neighbour preview whose longest side is at most `max_longest_side`."""

    name = "image_preview"
    tag = "image"
    capability = _CAPABILITY
    cached = False
    Request = PreviewImageRequest
    Response = ImageResponse
    routes = (Route("POST", "/v1/image/preview", "Image preview"),)

    def plan(self, call: Call, body: PreviewImageRequest) -> Plan:
        return _plan(call, body, body.max_longest_side)


class ImageFull(Operation):
    """The whole image (or cube channel), no size cap."""

    name = "image_full"
    tag = "image"
    capability = _CAPABILITY
    cached = False
    Request = ImageRequest
    Response = ImageResponse
    routes = (Route("POST", "/v1/image/full", "Full image"),)

    def plan(self, call: Call, body: ImageRequest) -> Plan:
        return _plan(call, body, None)

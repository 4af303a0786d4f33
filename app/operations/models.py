"""Pydantic pieces shared by the request and response models of the API.

Requests tolerate unknown fields (clients send fields some servers do not know); responses
declare the fields clients read, with descriptions and units, and allow more (answers carry
provenance fields that differ per operation).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

COMPRESSION_FIELD = Field(
    None, description="Payload compression of every base64 field: absent/'none', or 'qt-zlib' (Qt qCompress).",
)


class ApiRequest(BaseModel):
    """Base of every request body: unknown fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class DatasetRequest(ApiRequest):
    """A request about one open dataset."""

    dataset_id: str = Field(description="Id of an open dataset (`ds_…`), from `/v1/datasets/open`.")
    compression: str | None = COMPRESSION_FIELD


class Envelope(BaseModel):
    """The success envelope every JSON answer carries (errors: `valid: false` and the message)."""

    model_config = ConfigDict(extra="allow")
    valid: bool = Field(description="True on success; false with `error` on a logical failure (HTTP 200).")
    error: str = Field("", description="Empty on success, else the reason.")


class ProductEnvelope(Envelope):
    """A computed product: cached answers say so."""

    cache_hit: bool = Field(False, description="The answer came from the product cache.")
    computed_on: str | None = Field(None, description="`cpu` or `gpu`: where the kernels ran.")


class EncodedArray(ProductEnvelope):
    """A float32 array in `data_base64` (its shape fields are the subclass's)."""

    scalar_type: str = Field("float32", description="Element type of `data_base64` (little-endian float32).")
    compression: str = Field("none", description="Compression of the base64 fields: `none` or `qt-zlib`.")
    data_base64: str = Field(description="Base64 of little-endian float32 values, C order (row 0 first).")
    range_min: float | None = Field(None, description="Smallest finite value (data unit); null when none.")
    range_max: float | None = Field(None, description="Largest finite value (data unit); null when none.")


class ArrayPayload(EncodedArray):
    """A 2-D or 3-D float32 array in `data_base64`, `height × width` (× `depth`)."""

    width: int = Field(description="Columns (x, pixels).")
    height: int = Field(description="Rows (y, pixels; channels for x/y slices).")


class ErrorBody(BaseModel):
    """The API's error convention: HTTP 200 (logical failure), 401, 404, 413, 422, 429, 500."""

    valid: bool = Field(False, description="Always false.")
    error: str = Field(description="What went wrong, for a person to read.")


class TaskCreated(Envelope):
    """An async task was queued (`POST /v1/tasks/{operation}`)."""

    task_id: str = Field(description="Id to poll with `GET /v1/tasks/{task_id}` (`task_…`).")
    status: str = Field(description="`pending`, `running`, `done` or `error` (`completed`/`failed` in legacy style).")
    operation: str = Field(description="The operation's registry name.")
    cache_hit: bool = Field(False, description="The answer is already in the product cache.")


class TaskStatus(Envelope):
    """State of an async task."""

    task_id: str = Field(description="Task id.")
    operation: str = Field(description="The operation's registry name.")
    status: str = Field(description="`pending`, `running`, `done` or `error` (`completed`/`failed` in legacy style).")
    progress: float = Field(description="Fraction done, 0–1.")
    cache_hit: bool = Field(False, description="The answer came from the product cache.")
    result: dict[str, Any] | None = Field(None, description="The full answer once `done`, else null.")
    age_seconds: float = Field(description="Seconds since the task was created.")


def example(**fields: Any) -> ConfigDict:
    """``model_config`` of a request model with one documented example (extra fields allowed)."""
    return ConfigDict(extra="allow", json_schema_extra={"examples": [fields]})


class MaskSpec(BaseModel):
    """A noise-aware mask (SoFiA-2's smooth-and-clip finder), shared by moments, line width and stacking.

    The noise is measured per channel (1.4826·MAD of each plane) on every smoothed copy of the cube;
    the kernel set is ({0} ∪ `spatial_smooth_beams`) × ({1} ∪ `spectral_smooth_channels`): the
    unsmoothed cube always takes part. A voxel is kept when any smoothed copy exceeds `snr` times its
    own noise; the union is dilated spectrally by `dilate_channels`.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"method": "smooth_and_clip", "snr": 3.0, "spatial_smooth_beams": 1.5, "spectral_smooth_channels": 3,
         "dilate_channels": 1}]})
    method: str = Field("smooth_and_clip", description="Only `smooth_and_clip`.")
    snr: float = Field(3.0, gt=0, le=1000, description="Clip level in units of each smoothed cube's noise per channel.")
    spatial_smooth_beams: float | list[float] = Field(
        1.5, description="FWHM of the spatial Gaussian(s) in units of the beam (BMAJ, BMIN, BPA scaled); 0 = none.")
    spatial_smooth_pixels: float | None = Field(
        None, gt=0, le=1000, description="Instead of beams: one circular Gaussian of this FWHM (pixels); "
                                         "needed when the header has no beam.")
    spectral_smooth_channels: int | list[int] = Field(
        3, description="Width(s) of the spectral window in channels (odd; 1 = none).")
    spectral_window: str = Field("boxcar", description="`boxcar` or `hann`.")
    dilate_channels: int = Field(1, ge=0, le=64, description="Spectral dilation of the mask, channels on each side.")


class MaskOptions(BaseModel):
    """Request fields of the operations that take a noise-aware mask."""

    mask: MaskSpec | None = Field(None, description="Noise-aware mask (smooth and clip); voxels outside are ignored.")
    return_mask: bool = Field(False, description="Return the mask in the answer (`masks[i].data_base64`, uint8 0/1, "
                                                 "C order `(z, y, x)` over the channels used).")
    save_mask: bool = Field(False, description="Write the mask as a FITS cube (uint8, WCS, HISTORY) into the output "
                                               "directory (`masks[i].output_path`).")


class MaskInfo(BaseModel):
    """What a noise-aware mask kept, for one dataset."""

    model_config = ConfigDict(extra="allow")
    dataset_id: str = Field(description="The dataset the mask belongs to.")
    shape: list[int] = Field(description="`[channels, height, width]` of the mask.")
    channel_start: int = Field(description="First channel of the mask (inclusive).")
    channel_end: int = Field(description="Last channel of the mask (inclusive).")
    voxels: int = Field(description="Voxels in the mask.")
    fraction: float = Field(description="Voxels in the mask / voxels of its shape.")
    spec: dict = Field(description="The mask as applied: `snr`, spatial kernels (pixel covariances and how they were "
                                   "defined), spectral widths, window, dilation.")
    compression: str = Field("none", description="Compression of `data_base64` (the request's).")
    data_base64: str | None = Field(None, description="With `return_mask`: base64 uint8 0/1, C order `(z, y, x)`.")
    output_path: str | None = Field(None, description="With `save_mask`: the FITS mask written.")

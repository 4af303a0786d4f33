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

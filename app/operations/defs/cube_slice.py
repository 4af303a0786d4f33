"""One plane of a cube along x, y or z."""

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._views import VIEW_CAPABILITY
from app.operations.models import ArrayPayload, DatasetRequest, example
from app.services import cube_reads
from app.services.encoding import check_compression


class SliceRequest(DatasetRequest):
    """One plane: `z` → (y, x); `y` → (z, x); `x` → (z, y)."""

    model_config = example(dataset_id="ds_0123456789ab", axis="z", index=28)
    axis: str = Field("z", description="Axis the plane is perpendicular to: `x`, `y` or `z`.")
    index: int = Field(0, description="0-based index along `axis` (out of range is an error).")


class SliceResponse(ArrayPayload):
    """The plane as `height × width` float32."""

    axis: str = Field(description="Axis of the slice.")
    index: int = Field(description="Index along the axis.")


class CubeSlice(Operation):
    """One plane along x, y or z."""

    name = "slice"
    tag = "cube"
    capability = VIEW_CAPABILITY
    cached = False
    Request = SliceRequest
    Response = SliceResponse
    routes = (Route("POST", "/v1/cube/slice", "One plane of a cube"),)

    def plan(self, call: Call, body: SliceRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        comp = check_compression(body.compression)
        return Plan([dataset], {}, job=lambda ctx: cube_reads.slice_plane(dataset, axis=body.axis, index=body.index,
                                                                          compression=comp))

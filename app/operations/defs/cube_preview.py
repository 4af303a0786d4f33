"""Strided preview of a whole cube."""

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._views import VIEW_CAPABILITY
from app.operations.models import ArrayPayload, DatasetRequest, example
from app.services import cube_reads
from app.services.encoding import check_compression


class PreviewRequest(DatasetRequest):
    """A decimated copy of the cube: every `downsample`-th voxel along each axis."""

    model_config = example(dataset_id="ds_0123456789ab", downsample=4)
    downsample: int | None = Field(None, description="Stride along every axis (≥ 1); default keeps the answer small.")


class PreviewResponse(ArrayPayload):
    """`depth × height × width` float32 voxels (`ceil(n/downsample)` per axis)."""

    depth: int = Field(description="Channels in the preview.")
    downsample: int = Field(description="Stride used along each axis.")
    downsample_auto: bool | None = Field(None, description="The stride was chosen to keep the answer small.")


class CubePreview(Operation):
    """Strided decimation of the whole cube (`ceil(n/s)` per axis)."""

    name = "preview"
    tag = "cube"
    capability = VIEW_CAPABILITY
    cached = False
    Request = PreviewRequest
    Response = PreviewResponse
    routes = (Route("POST", "/v1/cube/preview", "Strided cube preview"),)

    def plan(self, call: Call, body: PreviewRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        comp = check_compression(body.compression)
        return Plan([dataset], {}, job=lambda ctx: cube_reads.preview(dataset, downsample=body.downsample,
                                                                      compression=comp))

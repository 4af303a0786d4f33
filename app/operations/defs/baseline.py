"""Baseline (continuum) subtraction over line-free channels; the result is a new dataset."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._register import output_still_open, register_output
from app.operations.models import ApiRequest, ProductEnvelope, example
from app.services import baseline


class BaselineRequest(ApiRequest):
    """Per-pixel polynomial (or median) baseline fitted over the line-free channels."""

    model_config = example(line_free_channels=[[0, 4], [51, 55]], poly_order=1)
    session_id: str | None = Field(None, description="Session of the dataset (task route; the path wins).")
    dataset_id: str | None = Field(None, description="Dataset (task route; must equal the path's).")
    channel_start: int | None = Field(None, description="First channel of the output (inclusive).")
    channel_end: int | None = Field(None, description="Last channel of the output (inclusive).")
    poly_order: int = Field(1, description="Legendre polynomial order of the baseline (0–10).")
    method: str = Field("polynomial", description="`polynomial` or `median`.")
    line_free_channels: list[int | list[int]] = Field(
        default_factory=list, description="Line-free channels: a flat list, or inclusive `[lo, hi]` ranges.")


class BaselineResponse(ProductEnvelope):
    """The subtracted cube, written to FITS and opened as `new_dataset_id`."""

    width: int = Field(description="Columns.")
    height: int = Field(description="Rows.")
    depth: int = Field(description="Channels written.")
    poly_order: int = Field(description="Polynomial order used.")
    method: str = Field(description="`polynomial` or `median`.")
    fit_channels: list[int] = Field(description="Line-free channels fitted (absolute indices).")
    rms_before: float | None = Field(None, description="RMS over the line-free channels before (data unit).")
    rms_after: float | None = Field(None, description="RMS over the line-free channels after (data unit).")
    output_path: str = Field(description="Path of the written FITS cube.")
    new_dataset_id: str = Field(description="The written cube, opened in the session.")
    session_id: str = Field(description="Session the new dataset belongs to.")


class Baseline(Operation):
    """Subtract a per-pixel polynomial/median baseline; the result is a new dataset of the session."""

    name = "baseline"
    tag = "spectral"
    capability = Capability(kernels=("baseline",), tier="heavy", gpu_kernel=True, chunking="y-slab",
                            bytes_per_voxel=24.0, note="batched least squares, Legendre basis", distributable=True)
    Request = BaselineRequest
    Response = BaselineResponse
    routes = (Route("POST", "/v1/spectral/baseline/{session_id}/{dataset_id}", "Baseline subtraction"),)

    def plan(self, call: Call, body: BaselineRequest) -> Plan:
        session_id = call.path.get("session_id") or body.session_id
        dataset_id = call.path.get("dataset_id") or body.dataset_id
        if not session_id or not dataset_id:
            raise InvalidRequest("session_id and dataset_id are required in the body.")
        if body.dataset_id and body.dataset_id != dataset_id:
            raise InvalidRequest("dataset_id in the body differs from the path.")
        dataset = call.runtime.sessions.dataset(dataset_id, session_id)
        params = baseline.resolve(dataset, channel_start=body.channel_start, channel_end=body.channel_end,
                                  poly_order=body.poly_order, method=body.method,
                                  line_free_channels=body.line_free_channels)
        output_dir = call.runtime.settings.output_dir
        return Plan([dataset], params.__dict__, job=lambda ctx: baseline.subtract(ctx, dataset, params, output_dir),
                    finish=register_output(call, session_id), cache_check=output_still_open(call, session_id))

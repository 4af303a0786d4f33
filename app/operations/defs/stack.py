"""Spectral stacking of several cubes: one combined spectrum, or a voxel-by-voxel cube."""

from __future__ import annotations

from fastapi.responses import Response
from pydantic import Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.io.spectral import velocity_options
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._frames import frames_response
from app.operations.defs._register import output_still_open, register_output
from app.operations.models import ApiRequest, MaskInfo, MaskOptions, ProductEnvelope, example
from app.services import masking, stacking


class StackRequest(ApiRequest, MaskOptions):
    """N ≥ 2 cubes of equal shape."""

    model_config = example(dataset_ids=["ds_0123456789ab", "ds_ba9876543210"], method="mean")
    dataset_ids: list[str] = Field(description="Datasets to stack (same shape).")
    method: str = Field("mean", description="`mean`, `median` or `weighted_mean`.")
    weight_by: str = Field("uniform", description="`uniform`, `rms` (1/σ², σ = 1.4826·MAD) or `peak`.")
    weights: list[float] = Field(default_factory=list, description="Explicit weights (override `weight_by`).")
    mode: str = Field("spectrum", description="`spectrum` (one combined spectrum) or `cube` (voxel stack).")
    rest_freq_hz: float | None = Field(None, description="Rest frequency (Hz); wins over the header's RESTFRQ.")
    velocity_convention: str | None = Field(
        None, description="`radio` (default), `optical` or `relativistic`: velocity from frequency/wavelength.")
    compression: str | None = Field(None, description="Ignored (stacked spectra are never compressed).")


class StackResponse(ProductEnvelope):
    """`mode: spectrum`: one spectrum, `rows = 1`, `cols = channels`; `mode: cube`: a new dataset."""

    mode: str = Field("spectrum", description="`spectrum` or `cube`.")
    method: str = Field(description="Combination used.")
    data_base64: str | None = Field(None, description="The stacked spectrum, base64 float32 (spectrum mode).")
    output_path: str | None = Field(None, description="Written cube (cube mode).")
    new_dataset_id: str | None = Field(None, description="The stacked cube, opened in the session (cube mode).")
    masks: list[MaskInfo] | None = Field(None, description="Each cube's noise-aware mask, when `mask` was given.")


def _spectrum_frame(result: dict) -> Response:
    if result.get("mode", "spectrum") != "spectrum":
        raise InvalidRequest("The binary stack route returns spectra only (mode 'spectrum').")
    return frames_response(result, ("data",), None)


class Stack(Operation):
    """Stack N ≥ 2 cubes of equal shape: one combined spectrum (rows = 1, cols = channels), or a cube."""

    name = "stack"
    tag = "spectral"
    capability = Capability(kernels=("stacking", "smooth_clip"), tier="heavy", gpu_kernel=True, chunking="cube",
                            bytes_per_voxel=8.0, note="partial/combine/finalize mean spectra",
                            distributable=True)
    Request = StackRequest
    Response = StackResponse
    routes = (
        Route("POST", "/v1/spectral/stack", "Stack cubes"),
        Route("POST", "/v1/spectral/stack/binary", "Stacked spectrum as one binary frame (width = channels)",
              render=lambda r: _spectrum_frame(r), media_type="application/octet-stream"),
    )

    def plan(self, call: Call, body: StackRequest) -> Plan:
        datasets = [call.dataset(ds) for ds in body.dataset_ids]
        stacking.validate(datasets, method=body.method, weight_by=body.weight_by, weights=body.weights)
        velocity = velocity_options(body)
        params = {**body.model_dump(include={"method", "weight_by", "weights", "mode"}), **velocity}
        weights = body.weights or None
        reqs = [masking.mask_request(d, body) for d in datasets]
        masks = None if reqs[0] is None else reqs
        if masks is not None:
            params["mask"] = [m.key() for m in masks]
        output_dir = call.runtime.settings.output_dir
        if body.mode == "spectrum":
            return Plan(datasets, params, job=lambda ctx: stacking.stack_spectra(
                ctx, datasets, method=body.method, weight_by=body.weight_by, weights=weights, **velocity,
                masks=masks, output_dir=output_dir))
        if body.mode != "cube":
            raise InvalidRequest("mode must be 'spectrum' or 'cube'.")
        session_id = datasets[0].session_id
        return Plan(datasets, params, finish=register_output(call, session_id),
                    cache_check=output_still_open(call, session_id),
                    job=lambda ctx: stacking.stack_cube(ctx, datasets, method=body.method, weight_by=body.weight_by,
                                                        weights=weights, output_dir=output_dir, masks=masks))

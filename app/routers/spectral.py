"""Spectral tools: line-width maps, baseline subtraction and stacking (heavy tier, cached)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.deps import dataset_for, get_runtime
from app.errors import InvalidRequest, NotFound
from app.io.spectral import velocity_options
from app.runtime import Runtime
from app.services import baseline, linewidth, stacking
from app.services.datasets import open_dataset
from app.services.encoding import binary_frame, decode_array
from app.services.operations import Operation, run_sync
from app.services.sessions import Dataset

router = APIRouter(prefix="/v1/spectral", tags=["spectral"])


class LinewidthRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_id: str
    channel_start: int | None = None
    channel_end: int | None = None
    mask_enabled: bool = False
    threshold_value: float | None = None
    method: str | None = None
    rest_freq_hz: float | None = None
    velocity_convention: str | None = None
    snr: float | None = Field(None, ge=0, description="SNR cut; default VISIVO_LINEWIDTH_SNR")


class BaselineRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    session_id: str | None = None
    dataset_id: str | None = None
    channel_start: int | None = None
    channel_end: int | None = None
    poly_order: int = 1
    method: str = "polynomial"
    line_free_channels: list = Field(default_factory=list)


class StackRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    dataset_ids: list[str]
    method: str = "mean"
    weight_by: str = "uniform"
    weights: list[float] = Field(default_factory=list)
    mode: str = "spectrum"
    rest_freq_hz: float | None = None
    velocity_convention: str | None = None


def linewidth_operation(runtime: Runtime, request: Request, body: LinewidthRequest) -> Operation:
    dataset = dataset_for(request, body.dataset_id)
    snr = runtime.settings.linewidth_snr if body.snr is None else body.snr
    params = linewidth.resolve(dataset, channel_start=body.channel_start, channel_end=body.channel_end,
                               mask_enabled=body.mask_enabled, threshold_value=body.threshold_value,
                               method=body.method, snr_cut=snr, **velocity_options(body))
    _, ny, _ = dataset.handle.source.shape
    resident = runtime.resident_cube(dataset)

    def part(rows: slice):  # noqa: ANN202
        return lambda ctx: linewidth.linewidth_rows(ctx, dataset, params, rows, resident=resident(ctx))

    parts = [part(rows) for rows in linewidth.row_chunks(ny, runtime.settings.effective_linewidth_chunks)]

    def finish(result: dict) -> dict:
        runtime.last_linewidth[dataset.dataset_id] = {"valid": True, "error": "", **result}
        return result

    return Operation("linewidth", [dataset], params.__dict__, parts=parts,
                     combine=lambda results: linewidth.assemble(dataset, params, results), finish=finish)


@router.post("/linewidth")
async def linewidth_json(body: LinewidthRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """FWHM (Gaussian fit) and equivalent-width maps as base64 float32."""
    return await run_sync(runtime, linewidth_operation(runtime, request, body))


@router.post("/linewidth/binary")
async def linewidth_binary(body: LinewidthRequest, request: Request,
                           runtime: Runtime = Depends(get_runtime)) -> Response:
    """Binary frames (int32 width, height, n_bytes; float32 data): FWHM then EW, or the one map ``method`` picks."""
    result = await run_sync(runtime, linewidth_operation(runtime, request, body))
    names = [name for name in ("fwhm", "ew") if f"{name}_base64" in result]
    frames = b"".join(
        binary_frame(decode_array(result[f"{name}_base64"]).reshape(result["height"], result["width"]))
        for name in names
    )
    return Response(frames, media_type="application/octet-stream",
                    headers={"X-Visivo-Frames": ",".join(names)})


@router.get("/linewidth/{dataset_id}")
async def linewidth_last(dataset_id: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """The last line-width result computed for this dataset (404 if none yet)."""
    dataset_for(request, dataset_id)
    result = runtime.last_linewidth.get(dataset_id)
    if result is None:
        raise NotFound(f"No line-width result for dataset {dataset_id}.")
    return result


def baseline_operation(runtime: Runtime, request: Request, session_id: str, dataset_id: str,
                       body: BaselineRequest) -> Operation:
    if body.dataset_id and body.dataset_id != dataset_id:
        raise InvalidRequest("dataset_id in the body differs from the path.")
    dataset = runtime.sessions.dataset(dataset_id, session_id)
    params = baseline.resolve(dataset, channel_start=body.channel_start, channel_end=body.channel_end,
                              poly_order=body.poly_order, method=body.method,
                              line_free_channels=body.line_free_channels)
    output_dir = runtime.settings.output_dir

    def finish(result: dict) -> dict:
        opened = open_dataset(runtime.sessions, runtime.roots, result["output_path"], session_id)
        return {**result, "new_dataset_id": opened.dataset_id, "session_id": session_id}

    return Operation("baseline", [dataset], params.__dict__,
                     job=lambda ctx: baseline.subtract(ctx, dataset, params, output_dir),
                     finish=finish, cache_check=lambda body: _still_open(runtime, session_id, body))


def _still_open(runtime: Runtime, session_id: str, body: dict) -> bool:
    try:
        runtime.sessions.dataset(body.get("new_dataset_id", ""), session_id)
    except NotFound:
        return False
    return True


@router.post("/baseline/{session_id}/{dataset_id}")
async def baseline_route(session_id: str, dataset_id: str, body: BaselineRequest,
                         request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Subtract a per-pixel polynomial/median baseline; the result is a new dataset of the session."""
    return await run_sync(runtime, baseline_operation(runtime, request, session_id, dataset_id, body))


def stack_operation(runtime: Runtime, request: Request, body: StackRequest) -> Operation:
    datasets: list[Dataset] = [dataset_for(request, ds) for ds in body.dataset_ids]
    stacking.validate(datasets, method=body.method, weight_by=body.weight_by, weights=body.weights)
    params = {**body.model_dump(include={"method", "weight_by", "weights", "mode"}), **velocity_options(body)}
    if body.mode == "spectrum":
        return Operation("stacking", datasets, params, job=lambda ctx: stacking.stack_spectra(
            ctx, datasets, method=body.method, weight_by=body.weight_by, weights=body.weights or None,
            **velocity_options(body)))
    if body.mode != "cube":
        raise InvalidRequest("mode must be 'spectrum' or 'cube'.")
    session_id = datasets[0].session_id
    output_dir = runtime.settings.output_dir

    def finish(result: dict) -> dict:
        opened = open_dataset(runtime.sessions, runtime.roots, result["output_path"], session_id)
        return {**result, "new_dataset_id": opened.dataset_id}

    return Operation("stacking", datasets, params, finish=finish,
                     cache_check=lambda body: _still_open(runtime, session_id, body),
                     job=lambda ctx: stacking.stack_cube(ctx, datasets, method=body.method, weight_by=body.weight_by,
                                                         weights=body.weights or None, output_dir=output_dir))


@router.post("/stack")
async def stack(body: StackRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> dict:
    """Stack N ≥ 2 cubes of equal shape: one combined spectrum (rows = 1, cols = channels), or a cube."""
    return await run_sync(runtime, stack_operation(runtime, request, body))


@router.post("/stack/binary")
async def stack_binary(body: StackRequest, request: Request, runtime: Runtime = Depends(get_runtime)) -> Response:
    """The stacked spectrum as one binary frame (width = channels, height = 1)."""
    if body.mode != "spectrum":
        raise InvalidRequest("The binary stack route returns spectra only (mode 'spectrum').")
    result = await run_sync(runtime, stack_operation(runtime, request, body))
    return Response(binary_frame(decode_array(result["data_base64"])), media_type="application/octet-stream")

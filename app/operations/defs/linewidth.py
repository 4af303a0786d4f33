"""Line-width maps: FWHM of a per-pixel Gaussian fit and the equivalent width."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.compute.capabilities import Capability
from app.io.spectral import velocity_options
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._frames import frames_response
from app.operations.models import DatasetRequest, MaskInfo, MaskOptions, ProductEnvelope, example
from app.services import linewidth, masking
from app.services.encoding import check_compression


class LinewidthRequest(DatasetRequest, MaskOptions):
    """Line widths over an inclusive channel range."""

    model_config = example(dataset_id="ds_0123456789ab", channel_start=5, channel_end=50)
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive); default 0.")
    channel_end: int | None = Field(None, description="Last channel (inclusive); default the last.")
    mask_enabled: bool = Field(False, description="Ignore voxels below `threshold_value`.")
    threshold_value: float | None = Field(None, description="Mask threshold (data unit) when `mask_enabled`.")
    method: str | None = Field(None, description="`fwhm`, `ew`, or null for both maps.")
    rest_freq_hz: float | None = Field(None, description="Rest frequency (Hz); wins over the header's RESTFRQ.")
    velocity_convention: str | None = Field(
        None, description="`radio` (default), `optical` or `relativistic`: velocity from frequency/wavelength.")
    snr: float | None = Field(None, ge=0, description="SNR cut; default `VISIVO_LINEWIDTH_SNR`.")


class LinewidthResponse(ProductEnvelope):
    """FWHM = 2.3548·σ of the Gaussian fit and EW = ΣI·Δv / peak, as float32 maps (`height × width`)."""

    width: int = Field(description="Columns (x).")
    height: int = Field(description="Rows (y).")
    scalar_type: str = Field("float32", description="Element type of the maps.")
    method: str | None = Field(None, description="What was computed: `fwhm`, `ew`, or null for both.")
    fwhm_unit: str = Field(description="Unit of the widths (km/s for velocity axes).")
    ew_unit: str = Field(description="Unit of the equivalent width.")
    fwhm_base64: str | None = Field(None, description="FWHM map, base64 float32 (NaN where not fitted).")
    ew_base64: str | None = Field(None, description="Equivalent-width map, base64 float32.")
    channel_start: int = Field(description="First channel used.")
    channel_end: int = Field(description="Last channel used.")
    masks: list[MaskInfo] | None = Field(None, description="The noise-aware mask used, when `mask` was given.")
    kernel: str | None = Field(None, description="`numba` (compiled CPU), `numpy` (CPU oracle) or `cupy` (GPU).")


def _last_result_keeper(dataset: Any) -> Any:
    def keep(result: dict[str, Any]) -> dict[str, Any]:
        dataset.results["linewidth"] = {"valid": True, "error": "", **result}
        return result

    return keep


class Linewidth(Operation):
    """FWHM (per-pixel Levenberg–Marquardt Gaussian fit: compiled on the CPU, batched NumPy oracle) and EW maps.

    Row chunks (`VISIVO_LINEWIDTH_CHUNKS`) run as concurrent heavy jobs. The last answer per
    dataset is kept for `GET /v1/spectral/linewidth/{dataset_id}`.
    """

    name = "linewidth"
    tag = "spectral"
    capability = Capability(kernels=("linewidth", "smooth_clip"), tier="heavy", gpu_kernel=True, chunking="y-slab",
                            bytes_per_voxel=48.0, distributable=True, note="batched Levenberg-Marquardt Gaussian fit")
    Request = LinewidthRequest
    Response = LinewidthResponse
    routes = (
        Route("POST", "/v1/spectral/linewidth", "Line-width maps"),
        Route("POST", "/v1/spectral/linewidth/binary", "Line-width maps as binary frames (FWHM then EW)",
              render=lambda r: frames_response(r, ("fwhm", "ew"), (r["height"], r["width"])),
              media_type="application/octet-stream"),
    )

    def plan(self, call: Call, body: LinewidthRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        settings = call.runtime.settings
        snr = settings.linewidth_snr if body.snr is None else body.snr
        params = linewidth.resolve(dataset, channel_start=body.channel_start, channel_end=body.channel_end,
                                   mask_enabled=body.mask_enabled, threshold_value=body.threshold_value,
                                   method=body.method, snr_cut=snr, **velocity_options(body))
        _, ny, _ = dataset.handle.source.shape
        chunks = linewidth.row_chunks(ny, settings.effective_linewidth_chunks)
        mask = masking.mask_request(dataset, body)
        if mask is not None:  # one job: the mask first, then the row chunks over it
            comp = check_compression(body.compression)
            return Plan([dataset], {**params.__dict__, "mask": mask.key(), "compression": comp},
                        finish=_last_result_keeper(dataset),
                        job=lambda ctx: linewidth.masked_linewidth(ctx, dataset, params, chunks, mask,
                                                                   output_dir=settings.output_dir, compression=comp))
        resident = call.resident(dataset)

        def part(rows: slice):  # noqa: ANN202
            return lambda ctx: linewidth.linewidth_rows(ctx, dataset, params, rows, resident=resident(ctx))

        parts = [part(rows) for rows in chunks]
        return Plan([dataset], params.__dict__, parts=parts,
                    combine=lambda results: linewidth.assemble(dataset, params, results),
                    finish=_last_result_keeper(dataset))

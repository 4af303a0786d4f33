"""Gaussian line-fit maps: amplitude, centre and σ with 1σ errors and reduced χ² (issue 17, item 5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from app.compute.capabilities import Capability
from app.io.spectral import velocity_options
from app.operations.base import Call, Operation, Plan, Route
from app.operations.models import DatasetRequest, ProductEnvelope, example
from app.services import linefit
from app.services.encoding import check_compression
from app.services.linewidth import row_chunks


class LinefitRequest(DatasetRequest):
    """Gaussian fits of every spectrum over an inclusive channel range."""

    model_config = example(dataset_id="ds_0123456789ab", channel_start=5, channel_end=50, components=1)
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive); default 0.")
    channel_end: int | None = Field(None, description="Last channel (inclusive); default the last.")
    components: int = Field(1, description="1 (default) or 2 Gaussian components; two are kept per pixel only "
                                           "where they lower the BIC by more than 10.")
    mask_enabled: bool = Field(False, description="Ignore voxels below `threshold_value`.")
    threshold_value: float | None = Field(None, description="Mask threshold (data unit) when `mask_enabled`.")
    rest_freq_hz: float | None = Field(None, description="Rest frequency (Hz); wins over the header's RESTFRQ.")
    velocity_convention: str | None = Field(
        None, description="`radio` (default), `optical` or `relativistic`: velocity from frequency/wavelength.")
    snr: float | None = Field(None, ge=0, description="Peak SNR cut before fitting; default `VISIVO_LINEWIDTH_SNR`.")
    save: bool = Field(False, description="Also write every map as one multi-extension FITS into the output "
                                          "directory (EXTNAME per map, EXTVER = component).")


class LinefitMap(BaseModel):
    """One encoded map of a line-fit answer."""

    unit: str = Field(description="Unit: BUNIT for amplitude, the spectral unit (km/s for velocity axes) for "
                                  "centre and sigma, empty for reduced_chi2 and ncomp.")
    shape: list[int] = Field(description="`[components, height, width]` for the parameters and errors, "
                                         "`[height, width]` for reduced_chi2 and ncomp.")
    range_min: float | None = Field(None, description="Smallest finite value (`unit`); null when none.")
    range_max: float | None = Field(None, description="Largest finite value (`unit`); null when none.")
    valid_pixels: int = Field(description="Finite pixels (of component 1 for the parameter maps).")
    data_base64: str = Field(description="Base64 of little-endian float32, C order of `shape` (component "
                                         "planes first, row 0 first); NaN where not fitted.")


class LinefitResponse(ProductEnvelope):
    """Per-pixel Gaussian fit maps; component planes are ordered by centre (ascending spectral coordinate)."""

    width: int = Field(description="Columns (x).")
    height: int = Field(description="Rows (y).")
    scalar_type: str = Field("float32", description="Element type of the maps.")
    compression: str = Field("none", description="Compression of the base64 fields: `none` or `qt-zlib`.")
    components: int = Field(description="Components requested (1 or 2): the leading axis of the parameter maps.")
    maps: dict[str, LinefitMap] = Field(
        description="`amplitude`, `amplitude_err`, `centre`, `centre_err`, `sigma`, `sigma_err` (1σ errors, "
                    "curve_fit's default scaling), `reduced_chi2` (RSS/((n−p)·s²), s = 1.4826·MAD of the "
                    "residuals) and, for two components, `ncomp` (0 none, 1 or 2 per pixel).")
    bunit: str = Field("", description="The cube's BUNIT (unit of the amplitude).")
    channel_start: int = Field(description="First channel used.")
    channel_end: int = Field(description="Last channel used.")
    fitted_pixels: int = Field(description="Pixels with an accepted fit.")
    two_component_pixels: int = Field(0, description="Pixels where two components were kept.")
    spectral_axis_unit: str = Field(description="Unit of centre and sigma (km/s for velocity axes).")
    output_path: str | None = Field(None, description="Path of the saved multi-extension FITS when `save` was true.")


class Linefit(Operation):
    """Gaussian line-fit maps (amplitude, centre, σ, their 1σ errors, reduced χ²) from the line-width fit.

    The one-component fit is the line-width operation's batched Levenberg–Marquardt fit and
    acceptance rule; `components: 2` adds a two-Gaussian fit kept where the BIC says so. Row
    chunks (`VISIVO_LINEWIDTH_CHUNKS`) run as concurrent heavy jobs.
    """

    name = "linefit"
    tag = "spectral"
    capability = Capability(kernels=("linefit",), tier="heavy", gpu_kernel=True, chunking="y-slab",
                            bytes_per_voxel=linefit.BYTES_PER_VOXEL,
                            note="line-width LM fit + covariance errors, optional two-component LM")
    Request = LinefitRequest
    Response = LinefitResponse
    routes = (Route("POST", "/v1/spectral/linefit", "Gaussian line-fit maps with errors"),)

    def plan(self, call: Call, body: LinefitRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        settings = call.runtime.settings
        snr = settings.linewidth_snr if body.snr is None else body.snr
        params = linefit.resolve(dataset, channel_start=body.channel_start, channel_end=body.channel_end,
                                 mask_enabled=body.mask_enabled, threshold_value=body.threshold_value,
                                 components=body.components, snr_cut=snr, **velocity_options(body))
        comp = check_compression(body.compression)
        _, ny, _ = dataset.handle.source.shape
        resident = call.resident(dataset)
        output_dir = settings.output_dir

        def part(rows: slice):  # noqa: ANN202
            return lambda ctx: linefit.linefit_rows(ctx, dataset, params, rows, resident=resident(ctx))

        def combine(results: list[dict[str, Any]]) -> dict[str, Any]:
            return linefit.assemble(dataset, params, results, save=body.save, output_dir=output_dir,
                                    compression=comp)

        parts = [part(rows) for rows in row_chunks(ny, settings.effective_linewidth_chunks)]
        return Plan([dataset], {**params.__dict__, "save": body.save, "compression": comp}, parts=parts,
                    combine=combine)

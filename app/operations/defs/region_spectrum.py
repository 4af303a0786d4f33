"""Sum and mean spectra inside DS9 / CRTF regions (several per call)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.io.spectral import velocity_options
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._regions import RegionSourceFields, plan_regions
from app.operations.models import DatasetRequest, ProductEnvelope, example
from app.services import region_spectrum
from app.services.cube_reads import clamp_range, require_cube


class RegionSpectrumRequest(DatasetRequest, RegionSourceFields):
    """One or more regions as DS9 or CRTF text (or a region file), and an optional channel range."""

    model_config = example(dataset_id="ds_0123456789ab",
                           regions="# Region file format: DS9\nimage\ncircle(30,30,5)\nbox(60,40,10,6,0)")
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive); default 0.")
    channel_end: int | None = Field(None, description="Last channel (inclusive); default the last one.")
    rest_freq_hz: float | None = Field(None, description="Rest frequency (Hz); wins over the header's RESTFRQ.")
    velocity_convention: str | None = Field(
        None, description="`radio` (default), `optical` or `relativistic`: velocity from frequency/wavelength.")


class RegionSpectrum(BaseModel):
    """The spectrum of one region."""

    index: int = Field(description="Position of the region in the text (0-based).")
    shape: str = Field(description="Region shape, e.g. `circle`, `rectangle`, `polygon`, `ellipse`.")
    num_pixels: int = Field(description="Pixels whose centre lies in the region.")
    bbox: dict[str, int] = Field(description="Bounding box `x0, x1, y0, y1` (0-based, inclusive).")
    sum: list[float | None] = Field(description="Σ I over the finite pixels per channel (data unit · pixel).")
    mean: list[float | None] = Field(description="Mean of the finite pixels per channel (data unit).")
    count: list[int] = Field(description="Finite pixels summed per channel.")


class RegionSpectrumResponse(ProductEnvelope):
    """Sum/mean spectra, one per region, over the channel range."""

    channel_start: int = Field(description="First channel (inclusive).")
    channel_end: int = Field(description="Last channel (inclusive).")
    num_channels: int = Field(description="Channels per spectrum.")
    spectral_values: list[float] = Field(description="Spectral coordinate per channel (`spectral_axis_unit`).")
    spectral_axis_unit: str = Field(description="km/s for velocity axes, else Hz or m.")
    bunit: str = Field("", description="The cube's BUNIT.")
    spectra: list[RegionSpectrum] = Field(description="One spectrum per region, in the text's order.")


class RegionSpectrumOp(Operation):
    """Sum and mean spectrum in each DS9/CRTF region (CARTA's spectral profile), several regions per call."""

    name = "region_spectrum"
    tag = "cube"
    capability = Capability(kernels=("region_flux",), tier="interactive", gpu_kernel=True, chunking="channel",
                            bytes_per_voxel=8.0, note="masked per-channel sums over the regions' union box")
    Request = RegionSpectrumRequest
    Response = RegionSpectrumResponse
    routes = (Route("POST", "/v1/cube/region_spectrum", "Spectra in DS9/CRTF regions"),)

    def plan(self, call: Call, body: RegionSpectrumRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        nz = require_cube(dataset).shape[0]
        if body.channel_start is not None and body.channel_end is not None and body.channel_start > body.channel_end:
            raise InvalidRequest("Invalid channel range.")
        c0, c1 = clamp_range(body.channel_start, body.channel_end, nz, "channel")
        text, fmt, masks = plan_regions(call, dataset, body)
        velocity = velocity_options(body)
        params = {"regions": text, "format": fmt,
                  "channel_start": c0, "channel_end": c1, **velocity}
        return Plan([dataset], params, job=lambda ctx: region_spectrum.region_spectra(
            ctx, dataset, masks, c0=c0, c1=c1, **velocity))

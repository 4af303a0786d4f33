"""Per-channel robust noise (MAD and σ) over a region and channel range."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._regions import RegionSourceFields, plan_regions
from app.operations.defs.cube_subvolume import RegionRequest
from app.operations.models import ProductEnvelope, example
from app.services import noise, region_noise
from app.services.cube_reads import clamp_range, require_cube
from app.services.sessions import Dataset


class NoiseRequest(RegionRequest, RegionSourceFields):
    """A box (`x0 … y1`) or DS9/CRTF regions (`regions` / `region_file`), and a channel range."""

    model_config = example(dataset_id="ds_0123456789ab", x0=64, x1=191, y0=64, y1=191, channel_start=5,
                           channel_end=50)


class RegionNoise(BaseModel):
    """Per-channel noise inside one region."""

    index: int = Field(description="Position of the region in the text (0-based).")
    shape: str = Field(description="Region shape, e.g. `circle`, `rectangle`, `polygon`, `ellipse`.")
    num_pixels: int = Field(description="Pixels whose centre lies in the region.")
    bbox: dict[str, int] = Field(description="Bounding box `x0, x1, y0, y1` (0-based, inclusive).")
    mad: list[float | None] = Field(description="Median absolute deviation per channel (data unit, unscaled).")
    sigma: list[float | None] = Field(description="Robust σ per channel: 1.4826·MAD (data unit).")
    median: list[float | None] = Field(description="Median per channel (data unit).")
    count: list[int] = Field(description="Finite pixels per channel.")
    blank_fraction: float = Field(description="Fraction of non-finite voxels of the region over the channels (0–1).")


class NoiseResponse(ProductEnvelope):
    """Per-channel noise: `sigma = 1.4826·mad` (data unit); channels with < 2 finite pixels are null."""

    channel_start: int = Field(description="First channel (inclusive).")
    channel_end: int = Field(description="Last channel (inclusive).")
    num_channels: int = Field(description="Channels measured.")
    mad: list[float | None] = Field(description="Median absolute deviation per channel (data unit, unscaled).")
    sigma: list[float | None] = Field(description="Robust σ per channel: 1.4826·MAD (data unit).")
    median: list[float | None] = Field(description="Median per channel (data unit).")
    region: dict[str, int] = Field(description="The clamped region `x0, x1, y0, y1` (inclusive).")
    blank_fraction: float = Field(description="Fraction of non-finite voxels in the selection (0–1).")
    regions: list[RegionNoise] | None = Field(
        None, description="With `regions`/`region_file` only: the noise of each region; the top-level "
                          "`mad`/`sigma`/`median` are then those of the regions' union and `region` its box.")


class Noise(Operation):
    """Per-channel MAD and σ over a region and channel range."""

    name = "noise"
    tag = "cube"
    capability = Capability(kernels=("noise",), tier="interactive", gpu_kernel=True, chunking="channel",
                            bytes_per_voxel=12.0, distributable=True, note="median/MAD per channel")
    Request = NoiseRequest
    Response = NoiseResponse
    routes = (Route("POST", "/v1/cube/noise", "Per-channel noise"),)

    def plan(self, call: Call, body: NoiseRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        bounds = body.bounds()
        if body.has_regions():
            return self._plan_regions(call, body, dataset, bounds)
        return Plan([dataset], bounds, job=lambda ctx: noise.channel_noise(ctx, dataset, **bounds))

    @staticmethod
    def _plan_regions(call: Call, body: NoiseRequest, dataset: Dataset, bounds: dict) -> Plan:
        """Noise per region over the channel range (x/y bounds refused beside regions)."""
        if any(bounds[k] is not None for k in ("x0", "x1", "y0", "y1")):
            raise InvalidRequest("Give either the box x0/x1/y0/y1 or regions, not both.")
        nz = require_cube(dataset).shape[0]
        if bounds["z0"] is not None and bounds["z1"] is not None and bounds["z0"] > bounds["z1"]:
            raise InvalidRequest("Invalid channel range.")
        z0, z1 = clamp_range(bounds["z0"], bounds["z1"], nz, "channel")
        text, fmt, masks = plan_regions(call, dataset, body)
        params = {"regions": text, "format": fmt, "z0": z0, "z1": z1}
        return Plan([dataset], params, job=lambda ctx: region_noise.region_noise(ctx, dataset, masks, z0=z0, z1=z1))

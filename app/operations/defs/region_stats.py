"""CASA imstat statistics inside DS9 / CRTF regions of a cube (several per call)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._regions import RegionSourceFields, plan_regions
from app.operations.models import DatasetRequest, ProductEnvelope, example
from app.services import region_stats
from app.services.cube_reads import clamp_range, require_cube


class RegionStatsRequest(DatasetRequest, RegionSourceFields):
    """Regions as DS9/CRTF text or a region file, and an optional channel range."""

    model_config = example(dataset_id="ds_0123456789ab",
                           regions="# Region file format: DS9\nimage\ncircle(30,30,5)\nbox(60,40,10,6,0)",
                           channel_start=5, channel_end=50)
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive); default 0.")
    channel_end: int | None = Field(None, description="Last channel (inclusive); default the last one.")


class RegionStatistics(BaseModel):
    """CASA imstat keys of one region over the channel range (blanks excluded; null when empty)."""

    index: int = Field(description="Position of the region in the text (0-based).")
    shape: str = Field(description="Region shape, e.g. `circle`, `rectangle`, `polygon`, `ellipse`.")
    num_pixels: int = Field(description="Pixels whose centre lies in the region (per channel).")
    bbox: dict[str, int] = Field(description="Bounding box `x0, x1, y0, y1` (0-based, inclusive).")
    npts: int = Field(description="Finite voxels: region pixels × channels less the blanks.")
    sum: float | None = Field(description="Σx (data unit).")
    sumsq: float | None = Field(description="Σx² (data unit²).")
    mean: float | None = Field(description="Σx / npts (data unit).")
    sigma: float | None = Field(description="Sample standard deviation √((Σx² − (Σx)²/n)/(n − 1)) (data unit).")
    rms: float | None = Field(description="√(Σx² / n) (data unit).")
    min: float | None = Field(description="Minimum (data unit).")
    max: float | None = Field(description="Maximum (data unit).")
    median: float | None = Field(description="Median (mean of the two middle values for even n).")
    medabsdevmed: float | None = Field(description="Median of |x − median| (data unit).")
    q1: float | None = Field(description="First quartile x₍⌈n/4⌉−1₎ of the sorted values.")
    q3: float | None = Field(description="Third quartile x₍⌈3n/4⌉−1₎.")
    quartile: float | None = Field(description="q3 − q1.")
    minpos: list[int] | None = Field(description="`[x, y, channel]` (0-based) of the first minimum in "
                                                 "(channel, y, x) order.")
    maxpos: list[int] | None = Field(description="`[x, y, channel]` (0-based) of the first maximum.")


class RegionStatsResponse(ProductEnvelope):
    """Statistics per region over the channel range."""

    channel_start: int = Field(description="First channel (inclusive).")
    channel_end: int = Field(description="Last channel (inclusive).")
    num_channels: int = Field(description="Channels in the statistics.")
    bunit: str = Field("", description="The cube's BUNIT.")
    regions: list[RegionStatistics] = Field(description="One entry per region, in the text's order.")


class RegionStatsOp(Operation):
    """CASA imstat statistics in each DS9/CRTF region over a channel range, several regions per call."""

    name = "region_stats"
    tag = "cube"
    capability = Capability(kernels=("stats",), tier="interactive", gpu_kernel=True, chunking="channel",
                            bytes_per_voxel=region_stats.BYTES_PER_VOXEL,
                            note="masked imstat partials over the regions' union box, combined over channel blocks")
    Request = RegionStatsRequest
    Response = RegionStatsResponse
    routes = (Route("POST", "/v1/cube/region_stats", "CASA imstat statistics in DS9/CRTF regions"),)

    def plan(self, call: Call, body: RegionStatsRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        nz = require_cube(dataset).shape[0]
        if body.channel_start is not None and body.channel_end is not None and body.channel_start > body.channel_end:
            raise InvalidRequest("Invalid channel range.")
        c0, c1 = clamp_range(body.channel_start, body.channel_end, nz, "channel")
        text, fmt, masks = plan_regions(call, dataset, body)
        region_stats.check_memory(masks, c0, c1)
        params = {"regions": text, "format": fmt, "channel_start": c0, "channel_end": c1}
        return Plan([dataset], params, job=lambda ctx: region_stats.region_statistics(ctx, dataset, masks, c0=c0,
                                                                                        c1=c1))

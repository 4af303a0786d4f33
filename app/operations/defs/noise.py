"""Per-channel robust noise (MAD and σ) over a region and channel range."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs.cube_subvolume import RegionRequest
from app.operations.models import ProductEnvelope
from app.services import noise


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


class Noise(Operation):
    """Per-channel MAD and σ over a region and channel range."""

    name = "noise"
    tag = "cube"
    capability = Capability(kernels=("noise",), tier="interactive", gpu_kernel=True, chunking="channel",
                            bytes_per_voxel=12.0, distributable=True, note="median/MAD per channel")
    Request = RegionRequest
    Response = NoiseResponse
    routes = (Route("POST", "/v1/cube/noise", "Per-channel noise"),)

    def plan(self, call: Call, body: RegionRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        bounds = body.bounds()
        return Plan([dataset], bounds, job=lambda ctx: noise.channel_noise(ctx, dataset, **bounds))

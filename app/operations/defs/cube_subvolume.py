"""An inclusive, clamped box of a cube."""

from __future__ import annotations

from pydantic import Field

from app.operations.base import Call, Operation, Plan, Route
from app.operations.defs._views import VIEW_CAPABILITY
from app.operations.models import ArrayPayload, DatasetRequest, example
from app.services import cube_reads
from app.services.encoding import check_compression


class RegionRequest(DatasetRequest):
    """Inclusive pixel bounds, clamped to the cube; `channel_start/channel_end` and `z0/z1` are synonyms."""

    model_config = example(dataset_id="ds_0123456789ab", x0=64, x1=191, y0=64, y1=191, channel_start=5,
                           channel_end=50)
    x0: int | None = Field(None, description="First column (0-based, inclusive); default 0.")
    x1: int | None = Field(None, description="Last column (inclusive); default the last.")
    y0: int | None = Field(None, description="First row (0-based, inclusive); default 0.")
    y1: int | None = Field(None, description="Last row (inclusive); default the last.")
    z0: int | None = Field(None, description="First channel (synonym of `channel_start`).")
    z1: int | None = Field(None, description="Last channel (synonym of `channel_end`).")
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive).")
    channel_end: int | None = Field(None, description="Last channel (inclusive).")

    def channels(self) -> tuple[int | None, int | None]:
        """The channel bounds, whichever spelling was sent."""
        start = self.channel_start if self.channel_start is not None else self.z0
        end = self.channel_end if self.channel_end is not None else self.z1
        return start, end

    def bounds(self) -> dict[str, int | None]:
        """All six bounds as keyword arguments (``x0 … z1``)."""
        z0, z1 = self.channels()
        return {"x0": self.x0, "x1": self.x1, "y0": self.y0, "y1": self.y1, "z0": z0, "z1": z1}


class SubvolumeResponse(ArrayPayload):
    """`depth × height × width` float32 voxels of the clamped box."""

    depth: int = Field(description="Channels in the box.")
    x0: int = Field(description="Clamped first column.")
    x1: int = Field(description="Clamped last column.")
    y0: int = Field(description="Clamped first row.")
    y1: int = Field(description="Clamped last row.")
    z0: int = Field(description="Clamped first channel.")
    z1: int = Field(description="Clamped last channel.")


class CubeSubvolume(Operation):
    """Inclusive, clamped sub-volume."""

    name = "subvolume"
    tag = "cube"
    capability = VIEW_CAPABILITY
    cached = False
    Request = RegionRequest
    Response = SubvolumeResponse
    routes = (Route("POST", "/v1/cube/subvolume", "Sub-volume of a cube"),)

    def plan(self, call: Call, body: RegionRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        comp = check_compression(body.compression)
        bounds = body.bounds()
        return Plan([dataset], {}, job=lambda ctx: cube_reads.subvolume(dataset, compression=comp, **bounds))

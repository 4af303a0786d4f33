"""Position–velocity diagrams along a polyline."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.errors import InvalidRequest
from app.io.spectral import velocity_options
from app.operations.base import Call, Operation, Plan, Route
from app.operations.models import DatasetRequest, EncodedArray, example
from app.services import pv
from app.services.cube_reads import clamp_range, require_cube
from app.services.encoding import check_compression


class PvRequest(DatasetRequest):
    """A polyline in pixels (`vertices`) or in ICRS degrees (`points_ra_dec`)."""

    model_config = example(dataset_id="ds_0123456789ab", vertices=[[60, 60], [196, 196]], width_pixels=3)
    vertices: list[list[float]] | None = Field(None, description="Path vertices `[x, y]` (0-based pixels).")
    points_ra_dec: list[list[float]] | None = Field(None, description="Path vertices `[ra, dec]` (degrees).")
    width_pixels: int = Field(1, ge=1, le=1001, description="Width across the path averaged per sample (pixels).")
    rest_freq_hz: float | None = Field(None, description="Rest frequency (Hz); wins over the header's RESTFRQ.")
    velocity_convention: str | None = Field(
        None, description="`radio` (default), `optical` or `relativistic`: velocity from frequency/wavelength.")
    channel_start: int | None = Field(None, description="First channel (0-based, inclusive); default 0.")
    channel_end: int | None = Field(None, description="Last channel (inclusive); default the last one.")
    spatial_bin: int = Field(1, ge=1, le=4096, description="Average this many consecutive positions (columns; "
                                                           "mean of finite values, last bin may be partial).")
    spectral_bin: int = Field(1, ge=1, le=4096, description="Average this many consecutive channels (rows; "
                                                            "mean of finite values, last bin may be partial).")


class PvResponse(EncodedArray):
    """`rows = channels` × `cols = positions` float32; positions in pixels and arcsec."""

    rows: int = Field(description="Channels (rows of `data_base64`).")
    cols: int = Field(description="Positions along the path (columns).")
    num_samples: int = Field(description="Samples along the path (= cols).")
    width_pixels: int = Field(description="Width averaged across the path (pixels).")
    total_length: float = Field(description="Path length (pixels).")
    total_length_arcsec: float = Field(description="Path length (arcsec; 0 without a celestial WCS).")
    positions_base64: str = Field(description="Position of each column along the path (pixels, float32).")
    positions_arcsec_base64: str = Field(description="Position of each column along the path (arcsec, float32).")
    spectral_axis_unit: str = Field(description="Unit of `spectral_values` (km/s for velocity axes).")
    spectral_values: list[float] = Field(description="Spectral coordinate of each row (bin mean when binned).")
    channel_start: int = Field(0, description="First channel used (inclusive).")
    channel_end: int = Field(0, description="Last channel used (inclusive).")
    spatial_bin: int = Field(1, description="Positions averaged per column.")
    spectral_bin: int = Field(1, description="Channels averaged per row.")


class PositionVelocity(Operation):
    """Position–velocity diagram along a polyline (rows = channels, columns = positions).

    Box sampling as CARTA does: ≤ 1-pixel steps; each sample averages the finite pixels across
    `width_pixels` along the local normal.
    """

    name = "pv"
    tag = "cube"
    capability = Capability(kernels=("pv",), tier="heavy", gpu_kernel=True, chunking="channel",
                            note="box sampling across the path (CARTA-style)",
                            distributable=True, dask_size_gated=True)
    Request = PvRequest
    Response = PvResponse
    routes = (Route("POST", "/v1/cube/pv", "Position–velocity diagram"),)

    def plan(self, call: Call, body: PvRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        comp = check_compression(body.compression)
        vertices = pv.path_vertices(dataset, vertices=body.vertices, points_ra_dec=body.points_ra_dec)
        velocity = velocity_options(body)
        if body.channel_start is not None and body.channel_end is not None and body.channel_start > body.channel_end:
            raise InvalidRequest("Invalid channel range.")
        c0, c1 = clamp_range(body.channel_start, body.channel_end, require_cube(dataset).shape[0], "channel")
        ranges = {"channel_start": c0, "channel_end": c1, "spatial_bin": body.spatial_bin,
                  "spectral_bin": body.spectral_bin}
        params = {"vertices": vertices.round(9).tolist(), "width": body.width_pixels, "compression": comp,
                  **velocity, **ranges}
        resident = call.resident(dataset)
        return Plan([dataset], params, job=lambda ctx: pv.pv_diagram(
            ctx, dataset, vertices_px=vertices, width_pixels=body.width_pixels, compression=comp,
            resident=resident(ctx), **velocity, **ranges))

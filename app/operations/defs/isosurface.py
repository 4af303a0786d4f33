"""Isosurface meshes (marching cubes) of a cube."""

from __future__ import annotations

from pydantic import Field

from app.compute.capabilities import Capability
from app.operations.base import Call, Operation, Plan, Route
from app.operations.models import DatasetRequest, ProductEnvelope, example
from app.services import isosurface as iso
from app.services.cube_reads import require_cube
from app.services.encoding import check_compression


class IsosurfaceRequest(DatasetRequest):
    """Marching cubes at `threshold`, optionally every `step` voxels."""

    model_config = example(dataset_id="ds_0123456789ab", threshold=0.02, step=2)
    threshold: float = Field(description="Iso-level (data unit); NaN counts as below it.")
    step: int = Field(1, ge=1, le=64, description="Voxel stride of the marching (≥ 1).")


class IsosurfaceResponse(ProductEnvelope):
    """A triangle mesh in voxel coordinates of the full cube."""

    num_points: int = Field(description="Vertices.")
    num_polys: int = Field(description="Triangles.")
    threshold: float = Field(description="Iso-level used (data unit).")
    step: int = Field(description="Voxel stride used.")
    bounds: list[float] = Field(description="`[xmin, xmax, ymin, ymax, zmin, zmax]` (voxels).")
    compression: str = Field("none", description="Compression of the base64 fields.")
    points_base64: str = Field(description="float32 `x, y, z` per vertex (voxel coordinates).")
    polys_base64: str = Field(description="int32 VTK cells `3, i, j, k` per triangle.")


class Isosurface(Operation):
    """Marching-cubes mesh at `threshold` (voxel coordinates; VTK `3,i,j,k` polygons).

    CPU: scikit-image (Lorensen); GPU: our own CuPy marching-cubes kernel (cuCIM has none).
    """

    name = "isosurface"
    tag = "products"
    capability = Capability(kernels=("isosurface",), tier="heavy", gpu_kernel=True, bytes_per_voxel=12.0,
                            note="CPU: scikit-image marching cubes (Lorensen); GPU: own CuPy kernel",
                            distributable=True, dask_size_gated=True)
    Request = IsosurfaceRequest
    Response = IsosurfaceResponse
    routes = (Route("POST", "/v1/products/isosurface", "Isosurface mesh"),)

    def plan(self, call: Call, body: IsosurfaceRequest) -> Plan:
        dataset = call.dataset(body.dataset_id)
        require_cube(dataset)
        comp = check_compression(body.compression)
        resident = call.resident(dataset)
        return Plan([dataset], {"threshold": body.threshold, "step": body.step, "compression": comp},
                    job=lambda ctx: iso.isosurface(ctx, dataset, threshold=body.threshold, step=body.step,
                                                   compression=comp, resident=resident(ctx)))

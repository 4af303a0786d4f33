"""Isosurfaces: marching cubes at a threshold over the full cube (optionally every ``step`` voxels).

Vertices are float32 ``x, y, z`` in voxel coordinates of the full-resolution cube (unit spacing,
zero origin); polygons use the VTK legacy cell layout ``3, i, j, k`` per triangle (int32).
NaN counts as below the threshold.

Limits, checked before any vertex is built: the triangles are first *counted* (each cell's
marching-cubes case, read in z-slabs of ``VISIVO_CHUNK_MEGABYTES``, so the count costs one
streaming read of the sampled cube); meshes above :data:`MAX_TRIANGLES` or empty meshes are
refused, then the mesh's memory, :data:`BYTES_PER_VOXEL` per sampled voxel plus :data:`BYTES_PER_TRIANGLE`
per triangle, must fit the per-request budget (``VISIVO_MEMORY_BUDGET_MB``).

On the Dask lane (CPU jobs), the count — the streaming pass over the whole sampled cube — runs as
one task per z-slab when the sampled cube holds at least ``VISIVO_DASK_MIN_MEGABYTES``; the mesh
itself is built on the server from the sampled volume (bounded by the budget above).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.compute.backend import to_host
from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_blocks
from app.errors import InvalidRequest
from app.services.budget import check_budget
from app.services.cube_reads import require_cube
from app.services.encoding import encode_array
from app.services.sessions import Dataset

#: Largest mesh returned (triangles): ~5·10⁶ triangles ≈ 100 MB of JSON/base64.
MAX_TRIANGLES = 5_000_000
#: Peak host memory per triangle while building and answering a mesh: scikit-image's mesh with the
#: ``3, i, j, k`` copy and the base64 text (~105-110 B measured), with a margin.
BYTES_PER_TRIANGLE = 128
#: Per sampled voxel: the float32 volume read and the kernel's blank-filled float32 copy.
BYTES_PER_VOXEL = 8


def isosurface(ctx: JobContext, dataset: Dataset, *, threshold: float, step: int, compression: str,
               resident=None) -> dict[str, Any]:
    if not np.isfinite(threshold):
        raise InvalidRequest("threshold must be a finite number.")
    if step < 1:
        raise InvalidRequest("step must be >= 1.")
    source = require_cube(dataset)
    if min(source.shape) < 2:
        raise InvalidRequest("An isosurface needs a cube with at least 2 voxels along each axis.")
    kernels = ctx.kernels("isosurface")
    ctx.progress(0.05)
    cube = resident() if (ctx.on_gpu and resident is not None) else None
    triangles = (kernels.isosurface_triangle_count(cube, level=float(threshold), step=step) if cube is not None
                 else count_triangles(ctx, kernels, source, threshold=float(threshold), step=step))
    if triangles == 0:
        raise InvalidRequest(f"Empty isosurface mesh for threshold {threshold}.")
    if triangles > MAX_TRIANGLES:
        raise InvalidRequest(f"Isosurface mesh too large ({triangles} triangles > {MAX_TRIANGLES}); "
                             f"use a larger step or a higher threshold.")
    sampled = np.prod([-(-n // step) for n in source.shape], dtype=np.int64)
    check_budget(BYTES_PER_VOXEL * int(sampled) + BYTES_PER_TRIANGLE * triangles,
                 f"An isosurface of {triangles} triangles over {int(sampled)} voxels")
    ctx.progress(0.3)
    if cube is None:
        s = slice(None, None, step)
        volume = source.read(z=s, y=s, x=s)
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            volume = cupy.asarray(volume)
        verts, faces = kernels.isosurface_mesh(volume, level=float(threshold), step=1)
        verts = np.asarray(to_host(verts), dtype=np.float32) * np.float32(step)  # sync
    else:
        verts, faces = kernels.isosurface_mesh(cube, level=float(threshold), step=step)
        verts = np.asarray(to_host(verts), dtype=np.float32)  # sync
    faces = np.asarray(to_host(faces), dtype=np.int32)  # sync
    ctx.progress(0.9)
    if faces.shape[0] == 0:
        raise InvalidRequest(f"Empty isosurface mesh for threshold {threshold}.")
    if faces.shape[0] > MAX_TRIANGLES:
        raise InvalidRequest(f"Isosurface mesh too large ({faces.shape[0]} triangles > {MAX_TRIANGLES}); "
                             f"use a larger step or a higher threshold.")
    polys = np.empty((faces.shape[0], 4), dtype=np.int32)
    polys[:, 0] = 3
    polys[:, 1:] = faces
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    return {
        "num_points": int(verts.shape[0]), "num_polys": int(faces.shape[0]), "threshold": float(threshold),
        "step": step, "bounds": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]), float(lo[2]), float(hi[2])],
        "coordinates": "voxel indices x, y, z of the full cube", "compression": compression,
        "points_base64": encode_array(verts, compression), "polys_base64": encode_array(polys, compression, "<i4"),
        "computed_on": "gpu" if ctx.on_gpu else "cpu",
    }


def count_triangles(ctx: JobContext, kernels, source, *, threshold: float, step: int) -> int:
    """Triangles of the mesh, counted over z-slabs of the sampled cube read from ``source``.

    Slabs of sampled planes overlap by one plane, so every cell (between two consecutive sampled
    planes) is counted exactly once; each slab holds at most ``ctx.chunk_bytes`` of float32 data.
    """
    nz, ny, nx = source.shape
    zs = range(0, nz, step)
    plane = 4 * -(-ny // step) * -(-nx // step)
    per = max(2, ctx.chunk_bytes // max(1, plane))
    s = slice(None, None, step)
    total = 0
    starts = range(0, max(1, len(zs) - 1), per - 1)
    cluster = getattr(ctx, "cluster", None)
    if cluster is not None and not ctx.on_gpu and cluster.worth(plane * len(zs)):  # a large cube: Dask tasks
        reads = [(slice(zs[k], zs[min(len(zs) - 1, k + per - 1)] + 1, step), s, s) for k in starts]
        counts = map_over_blocks(ctx, source, reads, lambda slab: int(kernels.isosurface_triangle_count(
            slab, level=threshold, step=1)), span=(0.05, 0.3))
        return sum(counts)
    for k in starts:
        ctx.check_cancelled()
        z0, z1 = zs[k], zs[min(len(zs) - 1, k + per - 1)]
        slab = source.read(z=slice(z0, z1 + 1, step), y=s, x=s)
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            slab = cupy.asarray(slab)
        total += int(kernels.isosurface_triangle_count(slab, level=threshold, step=1))  # sync
    return total

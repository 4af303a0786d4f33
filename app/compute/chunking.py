"""Chunk plans: y-slabs that keep the spectral axis whole within a memory budget."""

from __future__ import annotations


def y_slabs(shape: tuple[int, int, int], budget_bytes: int, *, bytes_per_voxel: float = 4.0) -> list[slice]:
    """Row slabs ``y0:y1`` such that one slab of the (nz, ny, nx) cube fits ``budget_bytes``.

    Parameters
    ----------
    shape
        ``(nz, ny, nx)`` of the cube.
    budget_bytes
        Memory allowed for one slab (input plus working memory).
    bytes_per_voxel
        Input plus working bytes per voxel of a slab.
    """
    nz, ny, nx = shape
    per_row = max(1.0, nz * nx * bytes_per_voxel)
    rows = max(1, min(ny, int(budget_bytes // per_row)))
    return [slice(y0, min(ny, y0 + rows)) for y0 in range(0, ny, rows)]


def channel_blocks(nz: int, plane_bytes: int, budget_bytes: int) -> list[slice]:
    """Channel blocks ``z0:z1`` whose planes fit ``budget_bytes`` together."""
    per = max(1, int(budget_bytes // max(1, plane_bytes)))
    return [slice(z0, min(nz, z0 + per)) for z0 in range(0, nz, per)]

"""Isosurface mesh of a cube on the CPU: scikit-image marching cubes (classic Lorensen cases).

Backs ``POST /v1/products/isosurface`` (client contract §5.2): a triangle mesh of the surface
``I = level`` in voxel coordinates (unit spacing, zero origin), vertices as ``x, y, z`` where
the cube axes are ``(z, y, x) = (spectral, y, x)``.

Conventions shared with :mod:`gpu_kernels.isosurface` so that both meshes have the same
vertex set (checked by the GPU parity test):

* A voxel is *inside* when ``value > level`` (scikit-image's rule); blanks (non-finite) are
  replaced by ``fill = min(finite sampled voxels)`` when that is below ``level``, else by
  ``level - 1``,
  so the surface closes against blanks as if they held the cube's background floor.
* With ``step = s > 1`` the cube is sampled at ``volume[::s, ::s, ::s]`` and coordinates are
  multiplied back by ``s`` (scikit-image's ``step_size``).
* Every cell edge whose end values straddle ``level`` carries exactly one vertex at the
  linear-interpolation point ``p0 + t (p1 - p0)``, ``t = (level - v0) / (v1 - v0)``
  (scikit-image evaluates it as ``(p0 |v1 - level| + p1 |v0 - level|) / (|v0 - level| +
  |v1 - level|)``, equal up to rounding). ``method="lorensen"`` is used on purpose: the default
  Lewiner tables add extra vertices inside some ambiguous cells, which the GPU kernel does not.

The meshes may still differ in the triangulation of ambiguous cells (Lorensen's table versus the
GPU kernel's face-consistent table), so compare vertex sets and surface area, not faces.
"""

from __future__ import annotations

import numpy as np

_Array = np.ndarray


def isosurface_mesh(volume: _Array, *, level: float, step: int = 1) -> tuple[_Array, _Array]:
    """Marching-cubes triangle mesh of ``volume == level``.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(nz, ny, nx)`` scalar cube; non-finite voxels count as below ``level``.
    level : float
        Iso level in data units; voxels ``> level`` are inside.
    step : int, optional
        Sampling step ``>= 1`` along every axis (coarser, smaller mesh). Default 1.

    Returns
    -------
    verts : numpy.ndarray
        float32 ``(n, 3)`` vertex coordinates ``(x, y, z)`` in voxels of the full cube.
    faces : numpy.ndarray
        int32 ``(m, 3)`` vertex indices per triangle (each vertex is shared by its triangles).
        Both are empty when the level does not cross the sampled cube.

    Raises
    ------
    ValueError
        If ``volume`` is not 3-D, ``level`` is not finite or ``step < 1``.
    """
    from skimage.measure import marching_cubes

    vol = _prepare(volume, level, step)
    empty = np.zeros((0, 3), dtype=np.float32), np.zeros((0, 3), dtype=np.int32)
    s = int(step)
    sampled = None if vol is None else vol[::s, ::s, ::s]
    if sampled is None or min(sampled.shape) < 2:
        return empty
    if not float(sampled.min()) <= level <= float(sampled.max()):
        return empty
    try:
        verts, faces, _, _ = marching_cubes(vol, level=float(level), step_size=s, method="lorensen")
    except (RuntimeError, ValueError):  # no surface in the sampled cube / level outside its range
        return empty
    return np.ascontiguousarray(verts[:, ::-1]), np.ascontiguousarray(faces, dtype=np.int32)


def _prepare(volume, level: float, step: int) -> np.ndarray | None:
    """float32 copy with blanks filled from the sampled voxels (module notes); None if all blank.

    The full-resolution copy goes to scikit-image with ``step_size`` so that it computes the
    vertex coordinates in full-resolution voxels itself (bit-identical to the GPU kernel).
    """
    a = np.asarray(volume)
    if a.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {a.shape}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    s = int(step)
    v = np.array(a, dtype=np.float32)
    fin = np.isfinite(v)
    samp = fin[::s, ::s, ::s]
    if not samp.any():
        return None
    if not fin.all():
        lo = float(v[::s, ::s, ::s][samp].min())
        v[~fin] = lo if lo < level else level - 1.0
    return v

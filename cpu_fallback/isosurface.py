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


#: Cells classified at a time by :func:`isosurface_triangle_count` (bounds its scratch memory to ~64 MB).
_COUNT_CELLS = 1 << 22
#: scikit-image's corner order of a cell, as offsets along the volume's axes (0, 1, 2): bit ``i`` of
#: the case index is set when corner ``i`` is inside (Lorensen / Lewiner ``casesClassic`` tables).
_CORNERS = ((0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1))


def isosurface_triangle_count(volume: _Array, *, level: float, step: int = 1) -> int:
    """Triangles :func:`isosurface_mesh` returns for the same arguments, counted without building them.

    Each cell of the sampled cube gets its 8-bit case index (bit ``i`` set when corner ``i`` is
    inside, ``value > level``; blanks are outside, as the blank fill always lies below ``level``)
    and contributes the number of triangles of that case in the classic (Lorensen) table that
    scikit-image's ``method="lorensen"`` uses. Cells are classified in z-slabs of at most
    :data:`_COUNT_CELLS` cells, so the scratch memory is bounded whatever the cube size.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(nz, ny, nx)`` scalar cube (any real dtype, e.g. a memmap slab); non-finite is blank.
    level : float
        Iso level in data units.
    step : int, optional
        Sampling step ``>= 1`` along every axis. Default 1.

    Returns
    -------
    int
        The number of triangles (0 when the level does not cross the sampled cube).

    Raises
    ------
    ValueError
        If ``volume`` is not 3-D, ``level`` is not finite or ``step < 1``.
    """
    a = np.asarray(volume)
    _check_args(a, level, step)
    s = int(step)
    sampled = a[::s, ::s, ::s]
    nz, ny, nx = sampled.shape
    if min(nz, ny, nx) < 2:
        return 0
    table = _classic_counts()
    planes = max(1, _COUNT_CELLS // ((ny - 1) * (nx - 1)))
    total = 0
    for z0 in range(0, nz - 1, planes):
        # float32 values compared in float64 with the level, exactly as scikit-image does
        slab = np.asarray(sampled[z0 : min(nz, z0 + planes + 1)], dtype=np.float32).astype(np.float64)
        with np.errstate(invalid="ignore"):
            inside = ((slab > level) & (slab < np.inf)).astype(np.uint8)
        k = inside.shape[0] - 1
        case = np.zeros((k, ny - 1, nx - 1), dtype=np.uint8)
        for bit, (d0, d1, d2) in enumerate(_CORNERS):
            case |= inside[d0 : d0 + k, d1 : d1 + ny - 1, d2 : d2 + nx - 1] << np.uint8(bit)
        total += int(np.bincount(case.ravel(), minlength=256).astype(np.int64) @ table)
    return total


def _classic_counts() -> np.ndarray:
    """Triangles per case (256,) int64 of scikit-image's classic marching-cubes table."""
    import base64

    from skimage.measure import _marching_cubes_lewiner_luts as luts

    shape, text = luts.CASESCLASSIC
    cases = np.frombuffer(base64.decodebytes(text.encode("ascii")), dtype=np.int8).reshape(shape)
    return ((cases != -1).sum(axis=1) // 3).astype(np.int64)


def _check_args(a: np.ndarray, level: float, step: int) -> None:
    if a.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {a.shape}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")


def _prepare(volume, level: float, step: int) -> np.ndarray | None:
    """float32 copy with blanks filled from the sampled voxels (module notes); None if all blank.

    The full-resolution copy goes to scikit-image with ``step_size`` so that it computes the
    vertex coordinates in full-resolution voxels itself (bit-identical to the GPU kernel).
    """
    a = np.asarray(volume)
    _check_args(a, level, step)
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

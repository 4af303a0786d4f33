"""Isosurface mesh of a cube on the GPU: our own marching-cubes kernels (CuPy RawModule).

Same public function and signature as :mod:`cpu_fallback.isosurface`, whose module notes define
the inside rule (``value > level``), the blank fill, ``step`` and the vertex position. cuCIM has
no marching cubes, so this is our own three-pass kernel:

1. ``visivo_mc_classify`` -- one thread per cell: the 8-bit corner configuration and its
   triangle count; an exclusive scan (``cupy.cumsum``) gives each cell's output offset.
2. ``visivo_mc_emit`` -- one thread per cell: each triangle as three global *edge ids*
   ``3 * (voxel index of the edge's lower end) + axis``.
3. ``cupy.unique`` of the edge ids gives the vertex list (sorted by edge id) and, through the
   inverse, the indexed faces; ``visivo_mc_vertex`` places one vertex per edge with the same
   double-precision formula as scikit-image, so vertices agree with the CPU mesh to the bit.

Triangle table: built once in Python (:func:`_tables`), not copied from Lorensen's. On each cube
face the crossing edges are joined by segments with one fixed rule for ambiguous faces (inside
corners are cut off separately), oriented with the inside on the left seen from outside; the
segments close into loops that are fan-triangulated (at most 5 triangles per cell, as in the
classic table). A face's segments depend only on that face's four corners, so neighbouring
cells agree on them: the mesh is watertight (every edge in exactly two triangles away from the
cube border) and consistently oriented, with the vertex set of the classic algorithm.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np

from app.compute.contract import Case, Tolerance

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=0.0, atol=1e-5)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("isosurface_mesh", ("filled_cube",), {"level": 0.5}, view="sorted_vertices"),)

_Array = Any
_THREADS = 256
_EPS = float(np.spacing(1.0))  # scikit-image's FLT_EPSILON

_SOURCE = r"""
extern "C" __global__ void visivo_mc_classify(
        const float* __restrict__ vol, const long long nz, const long long ny, const long long nx,
        const double level, const int* __restrict__ ntri, unsigned char* __restrict__ cfg,
        int* __restrict__ count) {
    long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long cx = nx - 1, cy = ny - 1, ncell = (nz - 1) * cy * cx;
    if (c >= ncell) return;
    long long x = c % cx, y = (c / cx) % cy, z = c / (cx * cy);
    int k = 0;
    for (int i = 0; i < 8; ++i) {
        long long v = ((z + (i >> 2)) * ny + y + ((i >> 1) & 1)) * nx + x + (i & 1);
        if ((double)vol[v] - level > 0.0) k |= 1 << i;
    }
    cfg[c] = (unsigned char)k;
    count[c] = ntri[k];
}

extern "C" __global__ void visivo_mc_emit(
        const long long nz, const long long ny, const long long nx,
        const unsigned char* __restrict__ cfg, const int* __restrict__ count,
        const long long* __restrict__ offset, const signed char* __restrict__ tri,
        long long* __restrict__ edges) {
    long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    long long cx = nx - 1, cy = ny - 1, ncell = (nz - 1) * cy * cx;
    if (c >= ncell || count[c] == 0) return;
    long long x = c % cx, y = (c / cx) % cy, z = c / (cx * cy);
    const signed char* t = tri + 15 * (int)cfg[c];
    long long base = 3 * offset[c];
    for (int j = 0; j < 3 * count[c]; ++j) {
        int e = t[j], axis = e >> 2, a = e & 1, b = (e >> 1) & 1;
        long long dx = axis == 0 ? 0 : a, dy = axis == 0 ? a : (axis == 1 ? 0 : b);
        long long dz = axis == 2 ? 0 : b;
        edges[base + j] = 3 * (((z + dz) * ny + y + dy) * nx + x + dx) + axis;
    }
}

extern "C" __global__ void visivo_mc_vertex(
        const float* __restrict__ vol, const long long ny, const long long nx, const double level,
        const long long step, const double eps, const long long* __restrict__ ids, const long long n,
        float* __restrict__ xyz) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    long long id = ids[i], axis = id % 3, v = id / 3;
    long long p[3] = {v % nx, (v / nx) % ny, v / (nx * ny)};
    long long stride = axis == 0 ? 1 : (axis == 1 ? nx : nx * ny);
    double w0 = 1.0 / (eps + fabs((double)vol[v] - level));
    double w1 = 1.0 / (eps + fabs((double)vol[v + stride] - level));
    for (int k = 0; k < 3; ++k) {
        double q = (double)(p[k] * step);
        if (k == axis) q = q + ((double)step * w1) / (w0 + w1);  /* skimage: x + stp*fx/ff */
        xyz[3 * i + k] = (float)q;
    }
}
"""


@functools.cache
def _module() -> Any:
    """Compiled marching-cubes kernels (memoised; CuPy caches the binary per device)."""
    import cupy as cp

    return cp.RawModule(code=_SOURCE)


def _corner(i: int) -> tuple[int, int, int]:
    return i & 1, (i >> 1) & 1, (i >> 2) & 1


def _edge(c0: int, c1: int) -> int:
    """Local edge id ``4 * axis + (first other offset) + 2 * (second other offset)``."""
    a, b = _corner(c0), _corner(c1)
    axis = next(k for k in range(3) if a[k] != b[k])
    rest = [a[k] for k in range(3) if k != axis]
    return 4 * axis + rest[0] + 2 * rest[1]


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Triangle counts ``(256,)`` int32 and local edge triples ``(256, 15)`` int8 (-1 padded)."""
    faces = []
    for axis, val in itertools.product(range(3), (0, 1)):
        u, v = ((axis + 1) % 3, (axis + 2) % 3) if val else ((axis + 2) % 3, (axis + 1) % 3)
        ring = []  # corners counter-clockwise seen from outside (u x v = outward normal)
        for pu, pv in ((0, 0), (1, 0), (1, 1), (0, 1)):
            c = [0, 0, 0]
            c[axis], c[u], c[v] = val, pu, pv
            ring.append(c[0] + 2 * c[1] + 4 * c[2])
        faces.append(ring)
    on: dict[int, set[int]] = {}  # local edge -> the two faces it lies on
    for f, ring in enumerate(faces):
        for k in range(4):
            on.setdefault(_edge(ring[k], ring[(k + 1) % 4]), set()).add(f)
    ntri = np.zeros(256, dtype=np.int32)
    tri = np.full((256, 15), -1, dtype=np.int8)
    for cfg in range(256):
        nxt: dict[int, int] = {}
        for ring in faces:
            s = [(cfg >> c) & 1 for c in ring]
            e = [_edge(ring[k], ring[(k + 1) % 4]) for k in range(4)]
            cross = [k for k in range(4) if s[k] != s[(k + 1) % 4]]
            if len(cross) == 2:  # inside run entered through e[k_in], left through e[k_out]
                k_in = next(k for k in cross if s[k] == 0)
                k_out = next(k for k in cross if s[k] == 1)
                nxt[e[k_out]] = e[k_in]
            elif len(cross) == 4:  # ambiguous face: cut off each inside corner
                for k in range(4):
                    if s[k]:
                        nxt[e[k]] = e[(k - 1) % 4]
        out: list[int] = []
        while nxt:
            start = min(nxt)
            loop = [start]
            while nxt[loop[-1]] != start:
                loop.append(nxt.pop(loop[-1]))
            nxt.pop(loop[-1])
            # fan root whose diagonals join no two edges of one face: a diagonal lying in a face
            # would also be drawn by the neighbouring cell (an edge of 4 triangles)
            loop = min(
                (loop[r:] + loop[:r] for r in range(len(loop))),
                key=lambda lp: sum(bool(on[lp[0]] & on[lp[i]]) for i in range(2, len(lp) - 1)),
            )
            for i in range(1, len(loop) - 1):
                out += [loop[0], loop[i], loop[i + 1]]
        ntri[cfg] = len(out) // 3
        tri[cfg, : len(out)] = out
    return ntri, tri


def isosurface_mesh(volume: _Array, *, level: float, step: int = 1) -> tuple[_Array, _Array]:
    """Marching-cubes triangle mesh of ``volume == level`` on the device; see the CPU twin.

    Returns
    -------
    verts : cupy.ndarray
        float32 ``(n, 3)`` vertex coordinates ``(x, y, z)`` in voxels, sorted by edge id.
    faces : cupy.ndarray
        int32 ``(m, 3)`` vertex indices per triangle. Both empty when nothing crosses ``level``.
    """
    import cupy as cp

    vol = _prepare(volume, level, step)
    empty = cp.zeros((0, 3), dtype=cp.float32), cp.zeros((0, 3), dtype=cp.int32)
    if vol is None or min(vol.shape) < 2:
        return empty
    lo, hi = float(vol.min()), float(vol.max())  # sync
    if not lo <= level <= hi:
        return empty
    nz, ny, nx = (np.int64(n) for n in vol.shape)
    ncell = int((nz - 1) * (ny - 1) * (nx - 1))
    ntri, tri = (cp.asarray(t) for t in _tables())
    cfg = cp.empty(ncell, dtype=cp.uint8)
    count = cp.empty(ncell, dtype=cp.int32)
    mod, lev = _module(), np.float64(level)
    grid = ((ncell + _THREADS - 1) // _THREADS,)
    _launch(mod, "visivo_mc_classify", grid, (vol, nz, ny, nx, lev, ntri, cfg, count))
    end = cp.cumsum(count, dtype=cp.int64)
    total = int(end[-1])  # sync
    if total == 0:
        return empty
    edges = cp.empty(3 * total, dtype=cp.int64)
    _launch(mod, "visivo_mc_emit", grid, (nz, ny, nx, cfg, count, end - count, tri, edges))
    ids, inverse = cp.unique(edges, return_inverse=True)  # sync (output size)
    verts = cp.empty((ids.size, 3), dtype=cp.float32)
    vgrid = ((ids.size + _THREADS - 1) // _THREADS,)
    args = (vol, ny, nx, lev, np.int64(step), np.float64(_EPS), ids, np.int64(ids.size), verts)
    _launch(mod, "visivo_mc_vertex", vgrid, args)
    return verts, inverse.reshape(-1, 3).astype(cp.int32)


#: Cells classified at a time by :func:`isosurface_triangle_count` (5 bytes of scratch per cell).
_COUNT_CELLS = 1 << 24


def isosurface_triangle_count(volume: _Array, *, level: float, step: int = 1) -> int:
    """Triangles :func:`isosurface_mesh` returns for the same arguments, counted without building them.

    Runs only the classify kernel (case index and this module's triangle count per cell) over
    z-slabs of at most :data:`_COUNT_CELLS` cells of the sampled cube and sums the counts; blanks
    are replaced by ``-inf`` (outside, as the mesh's fill, which always lies below ``level``).

    Returns
    -------
    int
        The number of triangles (0 when the level does not cross the sampled cube).
    """
    import cupy as cp

    a = cp.asarray(volume)
    _check_args(a, level, step)
    s = int(step)
    sampled = a[::s, ::s, ::s]
    nz, ny, nx = sampled.shape
    if min(nz, ny, nx) < 2:
        return 0
    ntri = cp.asarray(_tables()[0])
    mod, lev = _module(), np.float64(level)
    planes = max(1, _COUNT_CELLS // ((ny - 1) * (nx - 1)))
    total = 0
    for z0 in range(0, nz - 1, planes):
        slab = cp.ascontiguousarray(sampled[z0 : min(nz, z0 + planes + 1)], dtype=cp.float32)
        slab = cp.where(cp.isfinite(slab), slab, cp.float32(-cp.inf)).astype(cp.float32)
        ncell = (slab.shape[0] - 1) * (ny - 1) * (nx - 1)
        cfg = cp.empty(ncell, dtype=cp.uint8)
        count = cp.empty(ncell, dtype=cp.int32)
        grid = ((ncell + _THREADS - 1) // _THREADS,)
        dims = (np.int64(slab.shape[0]), np.int64(ny), np.int64(nx))
        _launch(mod, "visivo_mc_classify", grid, (slab, *dims, lev, ntri, cfg, count))
        total += int(count.sum(dtype=cp.int64))  # sync
    return total


def _check_args(a: Any, level: float, step: int) -> None:
    if a.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {a.shape}")
    if not np.isfinite(level):
        raise ValueError(f"level must be finite, got {level!r}")
    if int(step) != step or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")


def _launch(mod: Any, name: str, grid: tuple, args: tuple) -> None:
    """Launch ``name`` after checking that every array argument is C-contiguous."""
    for i, arg in enumerate(args):
        if getattr(arg, "ndim", 0) > 0 and not arg.flags.c_contiguous:
            raise ValueError(f"{name}: argument {i} is not C-contiguous")
    mod.get_function(name)(grid, (_THREADS,), args)


def _prepare(volume: Any, level: float, step: int) -> Any:
    """Contiguous float32 sampled copy with blanks filled (CPU rule); None if all blank."""
    import cupy as cp

    a = cp.asarray(volume)
    _check_args(a, level, step)
    s = int(step)
    v = cp.ascontiguousarray(a[::s, ::s, ::s], dtype=cp.float32)
    if v.size == 0:
        return None
    fin = cp.isfinite(v)
    lo = float(cp.where(fin, v, cp.inf).min())  # sync
    if not np.isfinite(lo):
        return None
    fill = np.float32(lo if lo < level else level - 1.0)
    return cp.where(fin, v, fill).astype(cp.float32)

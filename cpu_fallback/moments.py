"""Spectral moment maps in the API-reference convention (CPU reference implementation).

For the kept voxels ``I_i`` of one spectrum (finite and, if a threshold is given,
``I_i >= threshold``), with spectral coordinate ``v_i`` and integration weight ``dv_i >= 0``:

==== ====================== ===================================================== =============
 0   integrated intensity   ``M0 = sum I dv``                                     data x coord
 1   weighted coordinate    ``M1 = sum I v dv / M0``                              coord
 2   weighted variance      ``M2 = sum I (v - M1)^2 dv / M0``                     coord^2
 3   skewness               ``mu3 / sigma^3``                                     1
 4   excess kurtosis        ``mu4 / sigma^4 - 3``                                 1
 5   standardised 5th       ``mu5 / sigma^5``                                     1
 6   rms                    ``sqrt(sum I^2 dv / sum dv)`` (kept voxels only)      data
 8   maximum                ``max I``                                             data
 10  minimum                ``min I``                                             data
==== ====================== ===================================================== =============

with ``mu_k = sum I (v - M1)^k dv / M0`` and ``sigma = sqrt(mu_2)``. A pixel without a kept voxel
is NaN in every order; orders 1-5 are NaN where ``M0`` is 0 or not finite; orders 3-5 are NaN
where ``sigma`` is 0. "Zero" for a variance means ``|var| <= 1e-13 * max|v - ref|^2``, below
the rounding level of the method; there ``M2`` is reported as exactly 0 (e.g. a spectrum with a
single kept voxel).

Layout. The cube is streamed plane-wise: a *block* is a group of whole rows (about 8k pixels),
and a *chunk* is 16 consecutive channels of a block, copied into a cache-resident scratch
(one long contiguous run per channel plane, which reads memory as fast as ``numpy.sum``). Rows
are padded to a multiple of 64 pixels in the scratch, so every pixel sits at the same offset
modulo 64 in every BLAS call whatever rows its block holds.

Per chunk. Blanks are removed in two ``fmin``/``fmax`` passes (``NaN -> 0``; with a threshold,
``fmax(I, t-) -> keep = (I >= t) -> I * keep``); a running ``fmax`` gives the maximum (and tells
a blank spectrum: its maximum stays NaN). The chunk's sums ``sum I dv (v - r)^j``, ``j = 0..2``,
about the chunk's own centre ``r`` are float32 BLAS matrix-vector products: the terms are small
(``|v - r|`` is at most 8 channels) and the chunk short, so each partial sum carries only
float32 rounding. The partials of all chunks are combined in float64 about ``ref = mean(v)``
(``S1 = sum_k C1 + r_k C0``, ``S2 = sum_k C2 + 2 r_k C1 + r_k^2 C0``), and ``M2 = S2/S0 -
(S1/S0)^2`` is formed in float64, so the cancellation of a line far from the band centre (or at
10,000 km/s) costs nothing: ``M0``, ``M1`` and ``M2`` are within a few float32 roundings of the
exact values for any line position (the relative error of ``M2`` grows like ``(1 + 2h/sigma)^2``
with the chunk half-width ``h``, 8 channels, for lines narrower than that).

Orders 3-5 take a second, centred pass over the block (still in the last-level cache):
``sum I dv (v - M1)^k``, ``k = 2..5``, per pixel, in float32 per chunk and float64 across chunks.
Order 6 adds ``sum I^2 dv`` and the kept weight ``sum dv`` (from a 0/1 keep mask).

Rare cases are recomputed exactly, per pixel, in float64: a pixel whose sums are not finite
(an infinite voxel, or overflow) -- or, if some ``dv`` is 0 (BLAS may skip those), whose running
maximum or minimum is infinite. The decision and the recomputation depend only on the pixel's
own spectrum.

Ill-conditioned pixels. Where ``|M0|`` is small against ``sum |I| dv`` (noise that sums to
nearly zero), orders 1-5 divide by a cancelled sum: they are meaningless at any precision, and
this float32-sum kernel and the float64 GPU kernel can differ there by far more than float32
rounding.

Speed (2-core CPU, 512 x 512 x 256 float32, about 1% blank voxels): about 1.4x the time of one
``numpy.sum`` over the same in-memory cube for order 8, 2.3x for order 0, 3x for orders 0, 1,
2, 8 together, single-threaded; see ``bench/``. Memory: the scratch chunks and the per-block
partials (about 3/16 of a block's data), never a copy of the cube.

Chunking. Every per-pixel result depends only on that pixel's spectrum and on ``(nz, nx)`` and
the data type (which fix the chunking and the padding), so calling the function on y-slabs gives
bit-identical results to one call on the whole cube: the dispatcher can run slabs in parallel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Array type of this tree (the GPU tree uses ``cupy.ndarray``).
_Array = np.ndarray

#: Moment orders of the API reference.
SUPPORTED_ORDERS: frozenset[int] = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 10})

#: Channels per chunk (the half-width of a chunk bounds the error of M2 for narrow lines).
_CHUNK = 16

#: Bytes of one chunk (channels x sub-block pixels, working type): two of them stay in L2.
_CHUNK_BYTES = 1 << 18

#: Pixels finished together (a block: whole sub-blocks), and the bytes of its chunk partials.
_BLOCK_PIXELS = 1 << 14
_PART_BYTES = 1 << 22

#: Scratch rows are padded to a multiple of this many pixels; scratch buffers are page-aligned.
_ROW_ALIGN = 64
_BUF_ALIGN = 4096

#: Pixels with ``sum_k |C0_k| > _COND * |sum I dv|`` (chunk sums ``C0_k``) are recomputed exactly:
#: their float32 sums are too cancelled. ``sum_k |C0_k|`` underestimates ``sum |I| dv`` (by about
#: 4 for noise), so this catches ``sum |I| dv`` above about 600-1000 ``|sum I dv|``.
_COND = 150.0

#: Relative variance floor: |var| <= _VAR_FLOOR * max|u|^2 counts as zero (rounding level).
_VAR_FLOOR = 1e-13


class AxisPlan(NamedTuple):
    """Host-side spectral-axis preparation shared by the CPU and GPU kernels."""

    orders: tuple[int, ...]
    ref: float  # centring reference, coordinate units
    u: NDArray[np.float64]  # (nz,) centred coordinates v - ref
    w: NDArray[np.float64]  # (nz,) integration weights dv >= 0
    var_floor: float  # variances with |var| <= var_floor are zero
    threshold: float | None


def _plan_axis(
    nz: int, coords: ArrayLike, widths: ArrayLike, orders: Iterable[int], threshold: float | None
) -> AxisPlan:
    """Validate the spectral axis and the options; centre the coordinates.

    Parameters
    ----------
    nz : int
        Number of channels.
    coords, widths : array_like
        ``(nz,)`` host arrays: coordinates and integration weights ``dv >= 0``.
    orders : iterable of int
        Requested orders, a subset of :data:`SUPPORTED_ORDERS`.
    threshold : float or None
        Keep voxels with ``I >= threshold`` (data units).

    Returns
    -------
    AxisPlan
    """
    v = np.asarray(coords, dtype=np.float64).reshape(-1)
    w = np.asarray(widths, dtype=np.float64).reshape(-1)
    if nz < 1 or v.shape != (nz,) or w.shape != (nz,):
        raise ValueError(f"coords and widths must have shape ({nz},) with nz >= 1")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("coords must be finite and widths finite and >= 0")
    ords = tuple(sorted({int(o) for o in orders}))
    if not ords or not set(ords) <= SUPPORTED_ORDERS:
        raise ValueError(f"orders must be a non-empty subset of {sorted(SUPPORTED_ORDERS)}, got {ords}")
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError("threshold must be finite or None")
    ref = float(np.mean(v))
    u = v - ref
    floor = _VAR_FLOOR * float(np.max(np.abs(u))) ** 2
    return AxisPlan(ords, ref, u, w, floor, None if threshold is None else float(threshold))


def _aligned(shape: tuple[int, ...], dtype: np.dtype | type, fill: float | None = 0.0) -> NDArray:
    """An array (filled with ``fill`` unless it is None) whose data start on a
    :data:`_BUF_ALIGN` boundary."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + _BUF_ALIGN, dtype=np.uint8)
    off = -raw.ctypes.data % _BUF_ALIGN
    a = raw[off : off + n].view(dt).reshape(shape)
    if fill is not None:
        a.fill(fill)
    return a


class _Plan:
    """What to compute and how the cube is cut: chunks, weight rows, block shape, thresholds."""

    def __init__(self, p: AxisPlan, nz: int, nx: int, dtype: np.dtype) -> None:
        o = set(p.orders)
        self.p, self.nx = p, nx
        self.dt = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
        self.s0 = bool(o & {0, 1, 2, 3, 4, 5})
        self.s1 = bool(o & {1, 2, 3, 4, 5})
        self.s2 = 2 in o
        self.cen = max((k for k in o if 3 <= k <= 5), default=0)  # highest central power needed
        self.sq = 6 in o
        self.thr = p.threshold is not None
        zero_w = bool(np.any(p.w == 0))
        # running extrema: wanted, or telling blank spectra (no threshold), or -inf where BLAS
        # may skip a zero weight
        self.mx = 8 in o or not self.thr
        self.mn = 10 in o or (zero_w and not self.thr)
        self.sums = self.s0 or self.sq or (self.thr and self.mn)  # the cleaned chunk is needed
        self.kw = self.sq or (self.thr and not (self.mx or self.mn))  # kept weight (or count)
        self.count = zero_w  # kept count instead of kept weight for telling blank spectra
        self.nrow = int(self.s0) + int(self.s1) + int(self.s2)
        c = min(_CHUNK, nz)
        self.chunks: list[tuple[int, int, NDArray, float]] = []
        for z0 in range(0, nz, c):
            z1 = min(nz, z0 + c)
            uk, wk = p.u[z0:z1], p.w[z0:z1]
            d = uk - np.mean(uk)
            rows = np.array([wk, wk * d, wk * d * d][: self.nrow], dtype=self.dt).reshape(self.nrow, z1 - z0)
            self.chunks.append((z0, z1, rows, float(np.sum(wk))))
        self.r = np.array([float(np.mean(p.u[z0:z1])) for z0, z1, _, _ in self.chunks])
        # "zero" variance: below the rounding of the chunk sums, |d| <= h about |r| <= rmax
        h = max(float(np.max(np.abs(p.u[z0:z1] - r))) for (z0, z1, _, _), r in zip(self.chunks, self.r, strict=True))
        rmax = float(np.max(np.abs(self.r)))
        self.var_floor = max(p.var_floor, 16.0 * float(np.finfo(self.dt).eps) * h * (h + 2.0 * rmax))
        self.c = c
        self.w = p.w.astype(self.dt)
        self.nxp = -(-nx // _ROW_ALIGN) * _ROW_ALIGN
        self.sub_rows = max(1, _CHUNK_BYTES // (c * self.dt.itemsize * self.nxp))  # rows per sub-block
        block = min(_BLOCK_PIXELS, _PART_BYTES // (4 * len(self.chunks) * self.dt.itemsize))
        self.block_rows = self.sub_rows * max(1, block // (self.sub_rows * self.nxp))
        self.npix = self.block_rows * self.nxp
        if self.thr:  # smallest value of the working type >= threshold, and the one below it
            t = np.array(p.threshold, dtype=self.dt)
            self.t = t if t >= p.threshold else np.nextafter(t, np.array(np.inf, self.dt))
            self.t_below = np.nextafter(self.t, np.array(-np.inf, self.dt))


class _Work:
    """Scratch buffers (reused across blocks)."""

    def __init__(self, q: _Plan) -> None:
        c, n, dt, nk = q.c, q.npix, q.dt, len(q.chunks)
        m = q.sub_rows * q.nxp  # pixels of a sub-block
        self.b = _aligned((c, m), dt)  # the cleaned chunk; row padding stays 0
        self.t = _aligned((c, m), dt)  # keep mask / temporary / centred offsets
        self.k = _aligned((c, m), dt)  # products (orders 3-5)
        self.zero = _aligned((c, m), dt)
        if q.thr:
            self.lo = _aligned((c, m), dt, q.t_below)
            self.hi = _aligned((c, m), dt, q.t)
        self.red = _aligned((n,), dt, None)  # per-chunk reduction
        self.mx = _aligned((n,), dt, None) if q.mx else None
        self.mn = _aligned((n,), dt, None) if q.mn else None
        self.part = _aligned((q.nrow, nk, n), dt, None) if q.nrow else None  # chunk partials
        self.part64 = _aligned((nk, n), np.float64, None) if q.nrow > 1 else None
        self.sq = _aligned((nk, n), dt, None) if q.sq else None
        self.kw = _aligned((nk, n), dt, None) if q.kw else None
        self.cenp = _aligned((max(q.cen - 1, 0), n), dt, None) if q.cen else None
        self.ones = np.ones(c, dtype=dt)


def _views(q: _Plan, a: NDArray, lead: int, r: int) -> NDArray:
    """The ``(lead, r, nx)`` view of the first ``r`` padded rows of a ``(lead, pixels)`` buffer."""
    return a[:lead, : r * q.nxp].reshape(lead, r, q.nxp)[:, :, : q.nx]


def _reduce_into(op: np.ufunc, src: NDArray, acc: NDArray, red: NDArray, first: bool) -> None:
    """``acc = op(acc, op.reduce(src, axis=0))`` (``acc = op.reduce(src)`` for the first chunk)."""
    if first:
        op.reduce(src, axis=0, out=acc)
    else:
        op.reduce(src, axis=0, out=red)
        op(acc, red, out=acc)


def _extrema_only(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int) -> None:
    """Running maximum / minimum straight from the cube (no copy, no cleaning): orders 8, 10."""
    r = y1 - y0
    red = _views(q, wk.red[None], 1, r)[0]
    for i, (z0, z1, _, _) in enumerate(q.chunks):
        src = cube[z0:z1, y0:y1, :]
        for op, acc in ((np.fmax, wk.mx), (np.fmin, wk.mn)):
            if acc is not None:
                _reduce_into(op, src, _views(q, acc[None], 1, r)[0], red, i == 0)


def _sub_block(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, off: int) -> None:
    """Chunk partial sums, running extrema, kept weights and squares of rows ``y0:y1``, stored
    at pixel offset ``off`` of the block buffers.

    Each chunk is copied once from memory into the padded scratch, where the rest happens.
    Without a threshold the first chunk of the sub-block is reduced with the NaN-propagating
    ``maximum``: if no pixel comes out NaN the chunk has no blank and is summed as it is; after
    the first chunk with a blank, ``fmax`` gives the maximum and each chunk is cleaned, ``NaN -> 0``
    by ``fmax(I, fmin(I, 0))``. With a threshold: ``I -> fmax(I, t-)`` (NaN, -inf and everything
    below t become t-, exactly), ``keep = I >= t``, ``I -> I * keep``."""
    r = y1 - y0
    n = r * q.nxp
    px = slice(off, off + n)
    red = wk.red[:n]
    mx = wk.mx[px] if wk.mx is not None else None
    mn = wk.mn[px] if wk.mn is not None else None
    dirty = False
    for i, (z0, z1, rows, wsum) in enumerate(q.chunks):
        cz, first = z1 - z0, i == 0
        b = wk.b[:cz, :n]
        np.copyto(_views(q, wk.b, cz, r), cube[z0:z1, y0:y1, :], casting="same_kind")
        keep = None
        if not q.thr:
            if not dirty:
                np.maximum.reduce(b, axis=0, out=red)
                dirty = bool(np.isnan(red).any())
            if dirty:
                np.fmax.reduce(b, axis=0, out=red)
            if first:
                np.copyto(mx, red)
            else:
                np.fmax(mx, red, out=mx)
            if mn is not None:
                _reduce_into(np.fmin, b, mn, red, first)
            if dirty:
                if q.kw:
                    keep = wk.k[:cz, :n]
                    np.isfinite(b, out=keep, casting="unsafe")
                t = wk.t[:cz, :n]
                np.fmin(b, wk.zero[:cz, :n], out=t)  # min(I, 0), NaN -> 0
                np.fmax(b, t, out=b)  # I, NaN -> 0
        else:
            np.fmax(b, wk.lo[:cz, :n], out=b)
            if mx is not None:
                _reduce_into(np.fmax, b, mx, red, first)
            keep = wk.k[:cz, :n]
            np.greater_equal(b, wk.hi[:cz, :n], out=keep, casting="unsafe")
            if mn is not None:  # excluded -> NaN (0/0), which fmin ignores
                t = wk.t[:cz, :n]
                np.divide(keep, keep, out=t)
                np.multiply(t, b, out=t)
                _reduce_into(np.fmin, t, mn, red, first)
            np.multiply(b, keep, out=b)
        for j in range(q.nrow):
            np.dot(rows[j], b, out=wk.part[j, i, px])
        wz = q.w[z0:z1]
        if wk.kw is not None:
            if keep is None:
                wk.kw[i, px] = wsum
            else:
                np.dot(wk.ones[:cz] if q.count and not q.sq else wz, keep, out=wk.kw[i, px])
        if wk.sq is not None:
            t = wk.t[:cz, :n]
            np.multiply(b, b, out=t)
            np.dot(wz, t, out=wk.sq[i, px])


def _combine(q: _Plan, wk: _Work, n: int) -> dict[str, NDArray[np.float64]]:
    """Float64 sums of a block from the chunk partials ``C_j`` (``s1``, ``s2`` about ``ref``:
    ``S1 = sum_k C1 + r_k C0``, ``S2 = sum_k C2 + 2 r_k C1 + r_k^2 C0``), and ``sum_k |C0_k|``, a
    cheap lower bound of ``sum |I| dv``."""
    out: dict[str, NDArray[np.float64]] = {}
    if q.nrow:
        part = wk.part[:, :, :n]
        out["s0"] = np.add.reduce(part[0], axis=0, dtype=np.float64)
        out["abs"] = np.add.reduce(np.abs(part[0]), axis=0, dtype=np.float64)
        if q.s1:
            c64 = wk.part64[:, :n]
            np.copyto(c64, part[0])
            out["s1"] = np.add.reduce(part[1], axis=0, dtype=np.float64)
            out["s1"] += np.dot(q.r, c64)
            if q.s2:
                s2 = out["s2"] = np.add.reduce(part[2], axis=0, dtype=np.float64)
                s2 += np.dot(q.r * q.r, c64)
                np.copyto(c64, part[1])
                s2 += np.dot(2.0 * q.r, c64)
    for name, arr in (("sq", wk.sq), ("kw", wk.kw)):
        if arr is not None:
            out[name] = np.add.reduce(arr[:, :n], axis=0, dtype=np.float64)
    return out


def _centred_pass(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, m1u: NDArray[np.float64]) -> list[NDArray]:
    """``sum I dv (u - m1u)^k``, ``k = 2..q.cen``, per pixel (float32 per chunk, float64 total)."""
    n = (y1 - y0) * q.nxp
    acc = [np.zeros(n) for _ in range(q.cen - 1)]
    m32 = m1u.astype(q.dt)
    u32 = q.p.u.astype(q.dt)[:, None]
    for ys in range(y0, y1, q.sub_rows):
        ye = min(y1, ys + q.sub_rows)
        r = ye - ys
        m = r * q.nxp
        px = slice((ys - y0) * q.nxp, (ye - y0) * q.nxp)
        for z0, z1, _, _ in q.chunks:
            cz = z1 - z0
            b = wk.b[:cz, :m]
            np.copyto(_views(q, wk.b, cz, r), cube[z0:z1, ys:ye, :], casting="same_kind")
            t = wk.t[:cz, :m]
            if not q.thr:
                np.fmin(b, wk.zero[:cz, :m], out=t)
                np.fmax(b, t, out=b)
            else:
                np.fmax(b, wk.lo[:cz, :m], out=b)
                np.greater_equal(b, wk.hi[:cz, :m], out=t, casting="unsafe")
                np.multiply(b, t, out=b)
            d = wk.k[:cz, :m]
            np.subtract(u32[z0:z1], m32[None, px], out=d)  # u - M1, small: float32 is fine
            np.multiply(b, d, out=b)
            wz = q.w[z0:z1]
            for k in range(2, q.cen + 1):
                np.multiply(b, d, out=b)
                np.dot(wz, b, out=wk.cenp[k - 2, :m])
                acc[k - 2][px] += wk.cenp[k - 2, :m]
    return acc


def _exact(p: AxisPlan, x: NDArray[np.float64]) -> dict[int, NDArray[np.float64]]:
    """All requested orders of a few ``(nz, m)`` spectra, directly in float64 (rare cases)."""
    o = p.orders
    keep = np.isfinite(x)
    if p.threshold is not None:
        keep &= x >= p.threshold
    xk = np.where(keep, x, 0.0)
    u, w = p.u[:, None], p.w[:, None]
    none = ~keep.any(axis=0)
    xw = xk * w
    s0 = np.add.reduce(xw, axis=0)
    bad = none | (s0 == 0) | ~np.isfinite(s0)
    vals: dict[int, NDArray[np.float64]] = {0: s0}
    if any(1 <= k <= 5 for k in o):
        m1u = np.add.reduce(xw * u, axis=0) / s0
        vals[1] = np.where(bad, np.nan, m1u + p.ref)
        d = u - np.where(np.isfinite(m1u), m1u, 0.0)
        kmax = max([2] + [k for k in o if 3 <= k <= 5])
        mu = {k: np.add.reduce(xw * d**k, axis=0) / s0 for k in range(2, kmax + 1)}
        vals[2] = np.where(bad | (np.abs(mu[2]) <= p.var_floor), np.where(bad, np.nan, 0.0), mu[2])
        if any(3 <= k <= 5 for k in o):
            sig = np.sqrt(mu[2])
            bad3 = bad | ~(mu[2] > p.var_floor)
            for k in (3, 4, 5):
                if k in o:
                    vals[k] = np.where(bad3, np.nan, mu[k] / sig**k - (3.0 if k == 4 else 0.0))
    if 6 in o:
        vals[6] = np.sqrt(np.add.reduce(xk * xw, axis=0) / np.add.reduce(keep * w, axis=0))
    if 8 in o:
        vals[8] = np.where(keep, x, -np.inf).max(axis=0)
    if 10 in o:
        vals[10] = np.where(keep, x, np.inf).min(axis=0)
    return {k: np.where(none, np.nan, vals[k]) for k in o}


def _block(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, out: dict[int, NDArray[np.float32]]) -> None:
    """All requested maps of rows ``y0:y1``."""
    p, o = q.p, q.p.orders
    r, nx, n = y1 - y0, q.nx, (y1 - y0) * q.nxp
    if q.sums:
        for ys in range(y0, y1, q.sub_rows):
            _sub_block(cube, q, wk, ys, min(y1, ys + q.sub_rows), (ys - y0) * q.nxp)
        s = _combine(q, wk, n)
    else:
        _extrema_only(cube, q, wk, y0, y1)
        s = {}

    def view(a: NDArray) -> NDArray:
        return a[:n].reshape(r, q.nxp)[:, :nx]

    # pixels with no kept voxel
    if not q.thr:
        none = np.isnan(wk.mx[:n])
    elif q.mx:
        none = ~(wk.mx[:n] >= q.t)
    elif q.mn:
        none = np.isnan(wk.mn[:n])
    else:
        none = s["kw"] == 0
    # pixels recomputed exactly: non-finite sums or extrema (an infinite voxel, overflow), and
    # sums cancelled far below the float32 rounding of their terms
    fix = np.zeros(n, dtype=bool)
    if s:
        fix |= ~np.isfinite(sum(v for name, v in s.items() if name != "kw"))
    for e in (wk.mx, wk.mn):
        if e is not None:
            fix |= np.isinf(e[:n])
    dest = {k: out[k][y0:y1] for k in o}
    if q.s0:
        s0 = s["s0"]
        a0 = np.abs(s0)
        fix |= s["abs"] > _COND * a0
        bad = view(none | ~(a0 > 0))  # (inf is fixed anyway)
        if 0 in o:
            dest[0][...] = view(s0)
    if q.s1:
        m1u = s["s1"]
        m1u /= s0
        if 1 in o:
            np.add(view(m1u), p.ref, out=dest[1], casting="same_kind")
    if q.s2:
        var = s["s2"]
        var /= s0
        var -= m1u * m1u
        np.copyto(var, 0.0, where=np.abs(var) <= q.var_floor)
        dest[2][...] = view(var)
    if q.cen:
        cen = _centred_pass(cube, q, wk, y0, y1, np.where(np.isfinite(m1u), m1u, 0.0))
        mu2 = cen[0] / s0
        sig = np.sqrt(mu2)
        bad3 = bad | view(~(mu2 > p.var_floor))
        for k in (3, 4, 5):
            if k in o:
                dest[k][...] = view(cen[k - 2] / s0 / sig**k - (3.0 if k == 4 else 0.0))
                np.copyto(dest[k], np.nan, where=bad3)
    if q.sq:
        dest[6][...] = view(np.sqrt(s["sq"] / s["kw"]))
    if 8 in o:
        dest[8][...] = view(wk.mx)
    if 10 in o:
        dest[10][...] = view(wk.mn)
    none = view(none)
    anynone = bool(none.any())
    for k in o:
        if 1 <= k <= 2:
            np.copyto(dest[k], np.nan, where=bad)
        elif anynone:
            np.copyto(dest[k], np.nan, where=none)
    if fix.any():
        yy, xx = np.divmod(np.flatnonzero(fix), q.nxp)
        sel = xx < nx
        yy, xx = yy[sel], xx[sel]
        if yy.size:
            ex = _exact(p, np.asarray(cube[:, y0 + yy, xx], dtype=np.float64))
            for k in o:
                out[k][y0 + yy, xx] = ex[k]


def moment_maps(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    orders: Iterable[int],
    threshold: float | None = None,
) -> dict[int, _Array]:
    """Moment maps of a ``(spectral, y, x)`` cube (API-reference convention, module docstring).

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` float32 (or float64) intensities, data units; NaN/inf are blank.
        Read only; a read-only view or memmap slice is fine (it is read one block at a time).
    coords : array_like
        ``(nz,)`` float64 spectral coordinate of each channel in output units (e.g. km/s).
    widths : array_like
        ``(nz,)`` float64 integration weights ``dv >= 0`` (channel widths, same units).
    orders : iterable of int
        Any subset of ``{0, 1, 2, 3, 4, 5, 6, 8, 10}``.
    threshold : float, optional
        If given, only voxels with ``I >= threshold`` are kept (data units).

    Returns
    -------
    dict of int to numpy.ndarray
        ``(ny, nx)`` float32 map per requested order.

    Raises
    ------
    ValueError
        Bad shapes or dtype, unsupported orders, negative or non-finite widths, non-finite
        threshold.
    """
    if getattr(cube, "ndim", 0) != 3 or not np.issubdtype(cube.dtype, np.floating):
        raise ValueError(f"expected a floating (spectral, y, x) cube, got {getattr(cube, 'shape', None)}")
    nz, ny, nx = cube.shape
    p = _plan_axis(nz, coords, widths, orders, threshold)
    out = {k: np.empty((ny, nx), dtype=np.float32) for k in p.orders}
    if ny * nx == 0:
        return out
    q = _Plan(p, nz, nx, cube.dtype)
    wk = _Work(q)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for y0 in range(0, ny, q.block_rows):
            _block(cube, q, wk, y0, min(ny, y0 + q.block_rows), out)
    return out

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

#: Bytes of one chunk of the working type (channels x block pixels): cache-resident.
_CHUNK_BYTES = 1 << 19

#: Scratch rows are padded to a multiple of this many pixels; scratch buffers are page-aligned.
_ROW_ALIGN = 64
_BUF_ALIGN = 4096

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


def _aligned(shape: tuple[int, ...], dtype: np.dtype) -> NDArray:
    """A zeroed array whose data start on a :data:`_BUF_ALIGN` boundary."""
    n = int(np.prod(shape)) * dtype.itemsize
    raw = np.zeros(n + _BUF_ALIGN, dtype=np.uint8)
    off = -raw.ctypes.data % _BUF_ALIGN
    return raw[off : off + n].view(dtype).reshape(shape)


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
        self.zero_w = bool(np.any(p.w == 0))
        self.thr = p.threshold is not None
        self.mx = 8 in o or (not self.thr and 10 not in o)  # running max (also tells blanks)
        self.mn = 10 in o or (self.zero_w and not self.thr)  # running min (also tells -inf)
        if self.zero_w and not self.thr:
            self.mx = True  # +inf in a zero-width channel may not reach the sums
        self.kf = self.sq or self.thr  # a 0/1 keep mask (kept weight, count)
        self.cnt = self.thr and not (8 in o or 10 in o) and self.zero_w  # count of kept voxels
        self.nrow = int(self.s0) + int(self.s1) + int(self.s2)
        c = min(_CHUNK, nz)
        self.chunks: list[tuple[int, int, float, NDArray]] = []
        for z0 in range(0, nz, c):
            z1 = min(nz, z0 + c)
            uk, wk = p.u[z0:z1], p.w[z0:z1]
            r = float(np.mean(uk))
            d = uk - r
            rows = [wk, wk * d, wk * d * d][: self.nrow]
            self.chunks.append((z0, z1, r, np.array(rows, dtype=self.dt).reshape(self.nrow, z1 - z0)))
        self.c = c
        self.w = p.w.astype(self.dt)
        self.nxp = -(-nx // _ROW_ALIGN) * _ROW_ALIGN
        self.rows = max(1, _CHUNK_BYTES // (c * self.dt.itemsize * self.nxp))  # rows per block
        self.npix = self.rows * self.nxp
        if self.thr:  # smallest value of the working type >= threshold, and the one below it
            t = np.array(p.threshold, dtype=self.dt)
            self.t = t if t >= p.threshold else np.nextafter(t, np.array(np.inf, self.dt))
            self.t_below = np.nextafter(self.t, np.array(-np.inf, self.dt))


class _Work:
    """Scratch buffers of one block (reused across blocks)."""

    def __init__(self, q: _Plan) -> None:
        c, n, dt = q.c, q.npix, q.dt
        self.b = _aligned((c, n), dt)  # the chunk; rows padded with zeros
        self.t = _aligned((c, n), dt)  # temporary / keep mask / centred offsets
        self.k = _aligned((c, n), dt) if q.kf or q.cen else None  # keep mask / product
        self.row = _aligned((1, n), dt)  # a row of zeros, t or t-
        self.red = _aligned((n,), dt)  # per-chunk reduction
        self.mx = _aligned((n,), dt) if q.mx else None
        self.mn = _aligned((n,), dt) if q.mn else None
        nk = len(q.chunks)
        self.part = _aligned((q.nrow, nk, n), dt) if q.nrow else None  # chunk partials
        self.sq = _aligned((nk, n), dt) if q.sq else None
        self.kw = _aligned((nk, n), dt) if q.kf else None
        self.cnt = _aligned((nk, n), dt) if q.cnt else None
        self.cenp = _aligned((max(q.cen - 1, 0), n), dt) if q.cen else None
        self.ones = np.ones(c, dtype=dt)


def _load(cube: NDArray, q: _Plan, wk: _Work, z0: int, z1: int, y0: int, y1: int) -> NDArray:
    """Copy channels ``z0:z1`` of rows ``y0:y1`` into the padded chunk; return its 2-D view."""
    n = (y1 - y0) * q.nxp
    b = wk.b[: z1 - z0, :n]
    np.copyto(b.reshape(z1 - z0, y1 - y0, q.nxp)[:, :, : q.nx], cube[z0:z1, y0:y1, :], casting="same_kind")
    return b


def _clean(q: _Plan, wk: _Work, b: NDArray, first: bool | None, want_keep: bool) -> NDArray | None:
    """Zero the excluded voxels of a chunk in place (running extrema first, unless ``first`` is
    None); return the 0/1 keep mask if ``want_keep`` (or if a threshold needs it)."""
    n, cz = b.shape[1], b.shape[0]
    t = wk.t[:cz, :n]
    keep = None
    ext = first is not None
    if not q.thr:
        if ext and wk.mx is not None:
            _running(np.fmax, b, wk.mx[:n], wk.red[:n], first)
        if ext and wk.mn is not None:
            _running(np.fmin, b, wk.mn[:n], wk.red[:n], first)
        if want_keep:
            keep = wk.k[:cz, :n]
            np.isfinite(b, out=keep, casting="unsafe")
        np.fmin(b, wk.row[:, :n], out=t)  # NaN -> 0 (row of zeros)
        np.fmax(b, t, out=b)
        return keep
    row = wk.row[:, :n]
    row.fill(q.t_below)
    np.fmax(b, row, out=b)  # NaN, -inf and everything below t -> t- (exactly)
    if ext and wk.mx is not None:
        _running(np.fmax, b, wk.mx[:n], wk.red[:n], first)
    row.fill(q.t)
    keep = wk.k[:cz, :n]
    np.greater_equal(b, row, out=keep, casting="unsafe")
    if ext and wk.mn is not None:  # excluded -> NaN (0/0), ignored by fmin
        np.divide(keep, keep, out=t)
        np.multiply(t, b, out=t)
        _running(np.fmin, t, wk.mn[:n], wk.red[:n], first)
    np.multiply(b, keep, out=b)
    row.fill(0)
    return keep


def _running(op: np.ufunc, b: NDArray, acc: NDArray, red: NDArray, first: bool) -> None:
    """``acc = op(acc, op.reduce(b, axis=0))`` (``acc = op.reduce(b)`` for the first chunk)."""
    if first:
        op.reduce(b, axis=0, out=acc)
    else:
        op.reduce(b, axis=0, out=red)
        op(acc, red, out=acc)


def _first_pass(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int) -> None:
    """Chunk sums (partials), extrema, kept weights and squares of rows ``y0:y1``."""
    n = (y1 - y0) * q.nxp
    for i, (z0, z1, _, rows) in enumerate(q.chunks):
        b = _load(cube, q, wk, z0, z1, y0, y1)
        keep = _clean(q, wk, b, i == 0, q.kf)
        for j in range(q.nrow):
            np.dot(rows[j], b, out=wk.part[j, i, :n])
        wz = q.w[z0:z1]
        if keep is not None:
            np.dot(wz, keep, out=wk.kw[i, :n])
            if wk.cnt is not None:
                np.dot(wk.ones[: z1 - z0], keep, out=wk.cnt[i, :n])
        if wk.sq is not None:
            t = wk.t[: z1 - z0, :n]
            np.multiply(b, b, out=t)
            np.dot(wz, t, out=wk.sq[i, :n])


def _combine(q: _Plan, wk: _Work, n: int) -> dict[str, NDArray[np.float64]]:
    """Float64 sums of a block from the chunk partials: ``S0, S1, S2`` about ``ref``."""
    out: dict[str, NDArray[np.float64]] = {}
    r = np.array([ch[2] for ch in q.chunks])
    if q.nrow:
        part = wk.part[:, :, :n].astype(np.float64)
        ones = np.ones(len(q.chunks))
        out["s0"] = ones @ part[0]
        if q.s1:
            out["s1"] = ones @ part[1] + r @ part[0]
        if q.s2:
            out["s2"] = ones @ part[2] + (2.0 * r) @ part[1] + (r * r) @ part[0]
    for name, arr in (("sq", wk.sq), ("kw", wk.kw), ("cnt", wk.cnt)):
        if arr is not None:
            out[name] = np.add.reduce(arr[:, :n].astype(np.float64), axis=0)
    return out


def _centred_pass(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, m1u: NDArray[np.float64]) -> list[NDArray]:
    """``sum I dv (u - m1u)^k``, ``k = 2..q.cen``, per pixel (float32 per chunk, float64 total)."""
    n = (y1 - y0) * q.nxp
    acc = [np.zeros(n) for _ in range(q.cen - 1)]
    m = m1u.reshape(1, n)
    for z0, z1, _, _ in q.chunks:
        cz = z1 - z0
        b = _load(cube, q, wk, z0, z1, y0, y1)
        _clean(q, wk, b, None, False)
        d, t = wk.t[:cz, :n], wk.k[:cz, :n]
        np.subtract(q.p.u[z0:z1, None], m, out=d, casting="same_kind")
        np.multiply(b, q.w[z0:z1, None], out=t)
        np.multiply(t, d, out=t)
        for k in range(2, q.cen + 1):
            np.multiply(t, d, out=t)
            np.dot(wk.ones[:cz], t, out=wk.cenp[k - 2, :n])
            acc[k - 2] += wk.cenp[k - 2, :n]
    return acc


def _exact(p: AxisPlan, x: NDArray[np.float64]) -> dict[int, NDArray[np.float64]]:
    """All requested orders of a few ``(nz, m)`` spectra, directly in float64 (rare cases)."""
    keep = np.isfinite(x)
    if p.threshold is not None:
        keep &= x >= p.threshold
    xk = np.where(keep, x, 0.0)
    u, w = p.u[:, None], p.w[:, None]
    none = ~keep.any(axis=0)
    out: dict[int, NDArray[np.float64]] = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s0 = np.add.reduce(xk * w, axis=0)
        bad = none | (s0 == 0) | ~np.isfinite(s0)
        m1u = np.add.reduce(xk * w * u, axis=0) / s0
        d = u - np.where(np.isfinite(m1u), m1u, 0.0)
        mu = {k: np.add.reduce(xk * w * d**k, axis=0) / s0 for k in range(2, 6)}
        var = np.where(np.abs(mu[2]) <= p.var_floor, 0.0, mu[2])
        sig = np.sqrt(mu[2])
        bad3 = bad | ~(mu[2] > p.var_floor)
        vals = {
            0: s0, 1: m1u + p.ref, 2: var,
            3: mu[3] / sig**3, 4: mu[4] / sig**4 - 3.0, 5: mu[5] / sig**5,
            6: np.sqrt(np.add.reduce(xk * xk * w, axis=0) / np.add.reduce(keep * w, axis=0)),
            8: np.where(keep, x, -np.inf).max(axis=0), 10: np.where(keep, x, np.inf).min(axis=0),
        }  # fmt: skip
    for k in p.orders:
        v = vals[k]
        if 1 <= k <= 2:
            v = np.where(bad, np.nan, v)
        elif 3 <= k <= 5:
            v = np.where(bad3, np.nan, v)
        out[k] = np.where(none, np.nan, v)
    return out


def _block(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, out: dict[int, NDArray[np.float32]]) -> None:
    """All requested maps of rows ``y0:y1``."""
    p, o = q.p, q.p.orders
    r, nx, n = y1 - y0, q.nx, (y1 - y0) * q.nxp
    _first_pass(cube, q, wk, y0, y1)
    s = _combine(q, wk, n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # pixels with no kept voxel
        if q.thr and wk.mx is not None:
            none = ~(wk.mx[:n] >= q.t)
        elif q.thr and wk.mn is not None:
            none = np.isnan(wk.mn[:n])
        elif q.thr:
            none = s["cnt" if q.cnt else "kw"] == 0
        else:
            none = np.isnan(wk.mx[:n] if wk.mx is not None else wk.mn[:n])
        # pixels recomputed exactly: non-finite sums, or infinite extrema where BLAS may miss them
        fix = np.zeros(n, dtype=bool)
        for v in s.values():
            fix |= ~np.isfinite(v)
        if q.zero_w or not s:
            for e in (wk.mx, wk.mn):
                if e is not None:
                    fix |= np.isinf(e[:n])
        maps: dict[int, NDArray] = {}
        if q.s0:
            s0 = s["s0"]
            bad = none | (s0 == 0) | ~np.isfinite(s0)
            maps[0] = s0
        if q.s1:
            m1u = s["s1"] / s0
            maps[1] = m1u + p.ref
        if q.s2:
            var = s["s2"] / s0 - m1u * m1u
            np.copyto(var, 0.0, where=np.abs(var) <= p.var_floor)
            maps[2] = var
        if q.cen:
            cen = _centred_pass(cube, q, wk, y0, y1, np.where(np.isfinite(m1u), m1u, 0.0))
            mu2 = cen[0] / s0
            sig = np.sqrt(mu2)
            bad3 = bad | ~(mu2 > p.var_floor)
            for k in (3, 4, 5):
                if k in o:
                    maps[k] = np.where(bad3, np.nan, cen[k - 2] / s0 / sig**k - (3.0 if k == 4 else 0.0))
        if q.sq:
            maps[6] = np.sqrt(s["sq"] / s["kw"])
        if 8 in o:
            maps[8] = wk.mx[:n]
        if 10 in o:
            maps[10] = wk.mn[:n]
        for k in o:
            m = maps[k]
            if 1 <= k <= 2:
                m = np.where(bad, np.nan, m)
            m = np.where(none, np.nan, m)
            out[k][y0:y1] = m.reshape(r, q.nxp)[:, :nx]
    if fix.any():
        yy, xx = np.divmod(np.flatnonzero(fix), q.nxp)
        keep = xx < nx
        yy, xx = yy[keep], xx[keep]
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
        for y0 in range(0, ny, q.rows):
            _block(cube, q, wk, y0, min(ny, y0 + q.rows), out)
    return out

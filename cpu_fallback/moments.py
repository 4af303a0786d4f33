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

Layout. The cube is streamed plane-wise, so that memory is read in long contiguous runs (as
``numpy.sum`` reads it): a *block* is a group of whole rows (about 16k pixels, finished
together), a *sub-block* a group of rows whose *chunks* -- 32 consecutive channels -- take about
512 KiB. Each chunk is copied once from the cube into a scratch whose rows are padded to a
multiple of 64 pixels; everything else happens there.

Per chunk. Extrema: a running ``fmax`` / ``fmin`` reduction (NaN-aware; a spectrum that stays NaN
is blank). When the maximum is only needed to tell blank spectra, after the first chunk only the
pixels still NaN are followed (when they are few). Blanks: until a chunk of the sub-block shows
one (the NaN-propagating ``maximum`` reduction says so), chunks are summed as they are; after that
``NaN -> 0`` by ``fmax(I, fmin(I, 0))`` (two passes, no mask). With a threshold:
``I -> fmax(I, t-)`` (NaN, -inf and everything below t become t-, the value just below t),
``keep = (I >= t)``, ``I -> I*keep``. Sums: ``sum I u^j dv`` (``u = v - mean(v)``, ``j <= 2``)
are BLAS matrix-vector products over the chunk, added up over the chunks in float64. Order 8 or
10 alone is one reduction pass straight from the cube (no copy).

Numerics. Orders 1-5 are ratios of sums that can cancel (``M1`` of a coordinate near 0, ``mu_3``
and ``mu_5`` of a symmetric line, noise): their sums are float64 (the chunk is converted), like the
GPU reference kernel, which must agree with this one to ``PARITY_TOLERANCE`` (also checked when a
GPU backend starts). ``M2 = S2/S0 - (S1/S0)^2`` on the centred coordinates keeps the digits of a
line at 10,000 km/s. Orders 3-5 take a second, centred pass over the block (still in the
last-level cache): ``sum I (u - s1/s0)^k dv``, ``k = 2..5``, float64. Order 0 without orders 1-5
(and order 6) is summed in the data type (float32) per chunk and in float64 across chunks: within
float32 rounding of ``sum |I| dv``; a pixel whose chunk sums cancel (``sum_k |C_k| > 150 |M0|``,
noise summing to nearly 0) is recomputed exactly. So are pixels with an infinite voxel or an
overflowing sum (non-finite sums or extrema): a float64 computation of that spectrum alone.

Speed (this 2-core VM, 512 x 512 x 256 float32 with 1% blank voxels, best of 7 against one
``numpy.sum`` over the same in-memory cube, busy machine): order 8 about 1.05x, order 0 about
3.4x, order 1 about 4.8x, order 2 about 5.4x, orders 0, 1, 2, 8 together about 5.7x. The float64
conversion and products of orders 1-2 cost about 2x on top of the read (1x), the blank cleaning
and the extrema (about 1.5x together); float32 products would save about 15% but cannot hold the
parity tolerance for ``M1`` near 0 or ``M3``-``M5`` near 0. Memory: the scratch chunks and the
chunk sums of one block (a few MiB), never a copy of the cube.

Chunking. Every per-pixel result depends only on that pixel's spectrum and on ``(nz, nx)``, the
data type and the options (which fix the chunking and the padding: BLAS calls start at offsets
that are multiples of 64 pixels, on page-aligned buffers), so calling the function on y-slabs
gives bit-identical results to one call on the whole cube: the dispatcher can run slabs in
parallel.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from cpu_fallback._moments_layout import (
    _COND,
    _ChunkViews,
    _Plan,
    _reduce_into,
    _views,
    _Work,
)
from kernel_common.moment_plans import SUPPORTED_ORDERS as SUPPORTED_ORDERS
from kernel_common.moment_plans import AxisPlan, plan_axis

#: Array type of this tree (the GPU tree uses ``cupy.ndarray``).
_Array = np.ndarray


def _extrema_only(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int) -> None:
    """Running maximum / minimum straight from the cube (no copy, no cleaning): orders 8, 10."""
    r = y1 - y0
    red = _views(q, wk.red[None], 1, r)[0]
    for i, (z0, z1) in enumerate(q.chunks):
        src = cube[z0:z1, y0:y1, :]
        for op, acc in ((np.fmax, wk.mx), (np.fmin, wk.mn)):
            if acc is not None:
                _reduce_into(op, src, _views(q, acc[None], 1, r)[0], red, i == 0)


class _RowState:
    """Blank bookkeeping of the sub-block being summed (no threshold): has a chunk shown a blank
    yet, and -- when the maximum is wanted only to tell blank spectra -- the few pixels still
    without a finite value (None: keep the full running maximum)."""

    def __init__(self) -> None:
        self.dirty = False
        self.cand: NDArray[np.intp] | None = None


def _clean(
    q: _Plan,
    wk: _Work,
    v: _ChunkViews,
    mx: NDArray | None,
    mn: NDArray | None,
    first: bool,
    st: _RowState,
    want_keep: bool,
) -> NDArray | None:
    """Zero the excluded voxels of the loaded chunk ``v.b`` in place, updating the running
    extrema (unless ``mx`` and ``mn`` are None); return the 0/1 keep mask if ``want_keep``
    (always with a threshold).

    Without a threshold, until a chunk has shown a blank, the chunk is first reduced with the
    NaN-propagating ``maximum``: if no pixel comes out NaN it has no blank and stays as it is;
    otherwise ``fmax`` gives the maximum and ``NaN -> 0`` by ``fmax(I, fmin(I, 0))``. If the
    maximum only tells blank spectra (order 8 not asked, all ``dv > 0``), once the first chunk has
    given each pixel its maximum only the pixels still NaN are followed, when they are few. With a
    threshold: ``I -> fmax(I, t-)`` (NaN, -inf and everything below t become t-, exactly),
    ``keep = I >= t``, ``I -> I * keep``."""
    b, red = v.b, wk.red[: v.b.shape[1]]
    keep = None
    if not q.thr:
        if mx is None:
            st.dirty = True
        elif st.cand is not None and st.dirty:
            if st.cand.size:  # only pixels that are all blank so far
                got = np.fmax.reduce(b[:, st.cand], axis=0)
                np.fmax(mx[st.cand], got, out=got)
                mx[st.cand] = got
                st.cand = st.cand[np.isnan(got)]
        else:
            if not st.dirty:
                np.maximum.reduce(b, axis=0, out=red)
                st.dirty = bool(np.isnan(red).any())
            if st.dirty:
                np.fmax.reduce(b, axis=0, out=red)
            if first:
                np.copyto(mx, red)
                if q.blank_only:
                    cand = np.flatnonzero(np.isnan(mx))
                    st.cand = cand if cand.size <= mx.size // 32 else None
            else:
                np.fmax(mx, red, out=mx)
        if mn is not None:
            _reduce_into(np.fmin, b, mn, red, first)
        if st.dirty:
            if want_keep:
                keep = v.k
                np.isfinite(b, out=keep, casting="unsafe")
            np.fmin(b, v.zero, out=v.t)  # min(I, 0), NaN -> 0
            np.fmax(b, v.t, out=b)  # I, NaN -> 0
        return keep
    np.fmax(b, v.zero, out=b)  # (v.zero holds t- here)
    if mx is not None:
        _reduce_into(np.fmax, b, mx, red, first)
    keep = v.t
    np.greater_equal(b, v.hi, out=keep, casting="unsafe")
    if mn is not None:  # excluded -> NaN (0/0), which fmin ignores
        np.divide(keep, keep, out=v.k)
        np.multiply(v.k, b, out=v.k)
        _reduce_into(np.fmin, v.k, mn, red, first)
    np.multiply(b, keep, out=b)
    return keep


def _sub_block(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, off: int) -> None:
    """Chunk sums, running extrema and kept weights of rows ``y0:y1``, into the block buffers at
    pixel offset ``off``: each chunk is copied once from memory into the padded scratch, cleaned
    there, converted to the sum type and summed by BLAS matrix-vector products."""
    r = y1 - y0
    m = r * q.nxp
    px = slice(off, off + m)
    mx = wk.mx[px] if wk.mx is not None else None
    mn = wk.mn[px] if wk.mn is not None else None
    part, red = wk.part[:, :, px], wk.red[:m]
    src = cube[:, y0:y1, :]
    st = _RowState()
    for i, ((z0, z1), rows, v) in enumerate(zip(q.chunks, q.rows, wk.chunk_views(q, r), strict=True)):
        np.copyto(v.copy, src[z0:z1], casting="same_kind")
        keep = _clean(q, wk, v, mx, mn, i == 0, st, q.kw)
        b = v.b
        if q.sdt != q.dt and (q.nrow or q.sq):
            b = v.b64
            np.copyto(b, v.b)
        for j in range(q.nrow):
            np.dot(rows[j], b, out=part[j, i])
        if q.proxy:
            np.abs(part[0, i], out=part[q.at["abs"], i])
        if q.kw:
            wz = wk.ones[: z1 - z0] if q.count else q.w[z0:z1]
            if keep is None:
                part[q.at["kw"], i] = float(np.sum(wz, dtype=np.float64))
            else:
                np.dot(wz, keep, out=red)
                np.copyto(part[q.at["kw"], i], red)
        if q.sq:
            np.multiply(b, b, out=b)
            np.dot(q.w_s[z0:z1], b, out=part[q.at["sq"], i])


def _centred_pass(cube: NDArray, q: _Plan, wk: _Work, y0: int, y1: int, m1u: NDArray[np.float64]) -> list[NDArray]:
    """``sum I dv (u - m1u)^k``, ``k = 2..q.cen``, per pixel, in float64."""
    n = (y1 - y0) * q.nxp
    acc = [np.zeros(n) for _ in range(q.cen - 1)]
    for ys in range(y0, y1, q.sub_rows):
        ye = min(y1, ys + q.sub_rows)
        r = ye - ys
        m = r * q.nxp
        px = slice((ys - y0) * q.nxp, (ye - y0) * q.nxp)
        src = cube[:, ys:ye, :]
        for (z0, z1), v in zip(q.chunks, wk.chunk_views(q, r), strict=True):
            np.copyto(v.copy, src[z0:z1], casting="same_kind")
            _clean(q, wk, v, None, None, False, _RowState(), False)
            b64, d, t = v.b64, wk.d[: z1 - z0, :m], wk.row64[:m]
            np.copyto(b64, v.b)
            np.subtract(q.p.u[z0:z1, None], m1u[None, px], out=d)
            np.multiply(b64, d, out=b64)
            for k in range(2, q.cen + 1):
                np.multiply(b64, d, out=b64)
                np.dot(q.p.w[z0:z1], b64, out=t)
                acc[k - 2][px] += t
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
    else:
        _extrema_only(cube, q, wk, y0, y1)
    acc = np.add.reduce(wk.part[:, :, :n], axis=1, dtype=np.float64)  # float64 block sums

    def view(a: NDArray) -> NDArray:
        return a[:n].reshape(r, q.nxp)[:, :nx]

    # pixels with no kept voxel
    if not q.thr:
        none = np.isnan(wk.mx[:n])
    elif q.mx:
        none = ~(wk.mx[:n] >= q.t)
    elif q.mn:
        none = np.isnan(wk.mn[:n])
    elif q.by_s0:
        none = acc[0] == 0
    else:
        none = acc[q.at["kw"]] == 0
    # pixels recomputed exactly: non-finite sums or extrema (an infinite voxel, overflow), and
    # float32 sums cancelled far below the rounding of their terms
    fix = ~np.isfinite(acc.sum(axis=0)) if len(acc) else np.zeros(n, dtype=bool)
    if q.proxy:
        fix |= acc[q.at["abs"]] > _COND * np.abs(acc[0])
    for e in (wk.mx, wk.mn):
        if e is not None:
            fix |= np.isinf(e[:n])
    dest = {k: out[k][y0:y1] for k in o}
    if q.nrow:
        s0 = acc[0]
        bad = view(none | (s0 == 0) | ~np.isfinite(s0))
        if 0 in o:
            dest[0][...] = view(s0)
    if q.nrow > 1:
        m1u = acc[1] / s0
        if 1 in o:
            np.add(view(m1u), p.ref, out=dest[1], casting="same_kind")
    if q.nrow > 2:
        var = acc[2] / s0
        var -= m1u * m1u
        np.copyto(var, 0.0, where=np.abs(var) <= p.var_floor)
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
        dest[6][...] = view(np.sqrt(acc[q.at["sq"]] / acc[q.at["kw"]]))
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
    p = plan_axis(nz, coords, widths, orders, threshold)
    out = {k: np.empty((ny, nx), dtype=np.float32) for k in p.orders}
    if ny * nx == 0:
        return out
    q = _Plan(p, nz, nx, cube.dtype)
    wk = _Work(q)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for y0 in range(0, ny, q.block_rows):
            _block(cube, q, wk, y0, min(ny, y0 + q.block_rows), out)
    return out

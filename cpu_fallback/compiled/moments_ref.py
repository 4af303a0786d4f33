"""Moment maps, API-reference convention, compiled: any set of orders in one pass over raw FITS data.

Same definitions, blanking and NaN positions as the oracle :func:`cpu_fallback.moments.moment_maps`
(read its docstring for the table of orders): a voxel is kept if it is finite and, with a
threshold, ``I >= threshold``; a pixel without a kept voxel is NaN in every order; orders 1-2 are
NaN where ``M0`` is 0 or not finite; orders 3-5 also where ``mu_2`` is not above the variance
floor; ``M2`` is exactly 0 where ``|var| <= 1e-13 max|v - ref|^2``.

Algorithm. ``prange`` over rows ``y``; per row, for every channel ``z`` the ``nx`` voxels are
decoded from the stored bytes into a float32 scratch row (:mod:`cpu_fallback.compiled.rawdata`)
and added into per-pixel float64 accumulators: the kept count, ``S_j = sum I dv u^j`` (``j <= 2``,
``u = v - mean(v)``), ``sum I^2 dv`` and the kept weight (order 6), the float32 maximum and minimum.
Orders 3-5 take a second pass over the row (``sum I dv (u - S1/S0)^k``, ``k = 2..5``), as the
oracle does, also four channels at a time in the fused read modes. A "row" is ``r`` image rows
when they are contiguous in the plane (:func:`cpu_fallback.compiled.rawdata.group_rows`, up to
8192 pixels): longer contiguous reads, the same numbers. Voxels are selected by comparing the
float32 value with float32 bounds (:func:`~cpu_fallback.compiled.rawdata.float32_bounds`).
One loop per accumulator family, each chosen outside the ``x`` loop, so the loops
vectorise. In the fused read modes (contiguous unscaled float32 rows, decoded inside the loops)
four channels are added per pass (``S += ((t0 + t1) + t2) + t3``), so each accumulator is loaded
and stored once per four voxels; the grouping depends only on ``z``, not on the slab.

Numerics. All sums are float64 (the oracle sums order 0 alone in float32 per 32-channel chunk),
so order 0 agrees with the oracle within float32 rounding of ``sum |I| dv`` and orders 1-5 within
the rounding of float64 ratios (both rounded to float32 at the end): the tests check
``|a - b| <= 2e-5 |b| + 1e-6 * scale`` with ``scale`` the order's natural magnitude (module
:mod:`tests.kernels.test_compiled_moments`). Extrema and the NaN positions are identical.

Chunking: a pixel's maps depend only on its own spectrum, so y-slabs give bit-identical maps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.rawdata import (
    FMAX,
    MODE_ROW,
    float32_bounds,
    group_rows,
    in_range,
    raw_args,
    row_source,
    scratch,
    value,
)
from cpu_fallback.moments import SUPPORTED_ORDERS
from kernel_common.moment_plans import plan_axis

#: Orders this module computes (all of the reference convention).
COMPILED_ORDERS: frozenset[int] = SUPPORTED_ORDERS


@njit(cache=True, inline="always")
def _kv(mode, row, x, lo, hi):
    """Voxel ``x`` as float64, zeroed unless kept (float32 bounds ``lo, hi``), and whether it is kept."""
    e = value(mode, row, x)
    k = in_range(e, lo, hi)
    return (np.float64(e) if k else 0.0), k


@njit(cache=True, fastmath={"contract"})
def _accumulate4(mode, r0, r1, r2, r3, w, u, lo, hi, lo32, hi32, opt, cnt, s0, s1, s2, sq, kw, mx, mn):  # noqa: C901
    """The per-channel accumulations of four channels at once (rows ``r0..r3``, weights ``w[:4]``,
    centred coordinates ``u[:4]``): one load and store of each accumulator per four voxels.
    ``lo32, hi32``: the float32 bounds equivalent to ``[lo, hi]`` for float32 voxels (extrema loops)."""
    nrow, cen, want_sq, want_mx, want_mn = opt
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    u0, u1, u2, u3 = u[0], u[1], u[2], u[3]
    nx = cnt.size
    if nrow == 3:
        for x in range(nx):
            d0, k0 = _kv(mode, r0, x, lo, hi)
            d1, k1 = _kv(mode, r1, x, lo, hi)
            d2, k2 = _kv(mode, r2, x, lo, hi)
            d3, k3 = _kv(mode, r3, x, lo, hi)
            cnt[x] += np.int64(k0) + np.int64(k1) + np.int64(k2) + np.int64(k3)
            t0, t1, t2, t3 = w0 * d0, w1 * d1, w2 * d2, w3 * d3
            s0[x] += ((t0 + t1) + t2) + t3
            a0, a1, a2, a3 = t0 * u0, t1 * u1, t2 * u2, t3 * u3
            s1[x] += ((a0 + a1) + a2) + a3
            s2[x] += ((a0 * u0 + a1 * u1) + a2 * u2) + a3 * u3
    elif nrow == 2:
        for x in range(nx):
            d0, k0 = _kv(mode, r0, x, lo, hi)
            d1, k1 = _kv(mode, r1, x, lo, hi)
            d2, k2 = _kv(mode, r2, x, lo, hi)
            d3, k3 = _kv(mode, r3, x, lo, hi)
            cnt[x] += np.int64(k0) + np.int64(k1) + np.int64(k2) + np.int64(k3)
            t0, t1, t2, t3 = w0 * d0, w1 * d1, w2 * d2, w3 * d3
            s0[x] += ((t0 + t1) + t2) + t3
            s1[x] += ((t0 * u0 + t1 * u1) + t2 * u2) + t3 * u3
    elif nrow == 1:
        for x in range(nx):
            d0, k0 = _kv(mode, r0, x, lo, hi)
            d1, k1 = _kv(mode, r1, x, lo, hi)
            d2, k2 = _kv(mode, r2, x, lo, hi)
            d3, k3 = _kv(mode, r3, x, lo, hi)
            cnt[x] += np.int64(k0) + np.int64(k1) + np.int64(k2) + np.int64(k3)
            s0[x] += ((w0 * d0 + w1 * d1) + w2 * d2) + w3 * d3
    elif not (want_mx or want_mn or want_sq):  # otherwise the extrema or the sq loop count
        for x in range(nx):
            k0 = in_range(value(mode, r0, x), lo, hi)
            k1 = in_range(value(mode, r1, x), lo, hi)
            k2 = in_range(value(mode, r2, x), lo, hi)
            k3 = in_range(value(mode, r3, x), lo, hi)
            cnt[x] += np.int64(k0) + np.int64(k1) + np.int64(k2) + np.int64(k3)
    if want_sq:
        for x in range(nx):
            d0, k0 = _kv(mode, r0, x, lo, hi)
            d1, k1 = _kv(mode, r1, x, lo, hi)
            d2, k2 = _kv(mode, r2, x, lo, hi)
            d3, k3 = _kv(mode, r3, x, lo, hi)
            sq[x] += ((w0 * d0 * d0 + w1 * d1 * d1) + w2 * d2 * d2) + w3 * d3 * d3
            kw[x] += (((w0 if k0 else 0.0) + (w1 if k1 else 0.0)) + (w2 if k2 else 0.0)) + (w3 if k3 else 0.0)
            if nrow == 0 and not (want_mx or want_mn):
                cnt[x] += np.int64(k0) + np.int64(k1) + np.int64(k2) + np.int64(k3)
    if want_mx:
        for x in range(nx):
            m = mx[x]
            e = value(mode, r0, x)
            m = e if (e >= lo32) & (e <= hi32) & (e > m) else m
            e = value(mode, r1, x)
            m = e if (e >= lo32) & (e <= hi32) & (e > m) else m
            e = value(mode, r2, x)
            m = e if (e >= lo32) & (e <= hi32) & (e > m) else m
            e = value(mode, r3, x)
            mx[x] = e if (e >= lo32) & (e <= hi32) & (e > m) else m
    if want_mn:
        for x in range(nx):
            m = mn[x]
            e = value(mode, r0, x)
            m = e if (e >= lo32) & (e <= hi32) & (e < m) else m
            e = value(mode, r1, x)
            m = e if (e >= lo32) & (e <= hi32) & (e < m) else m
            e = value(mode, r2, x)
            m = e if (e >= lo32) & (e <= hi32) & (e < m) else m
            e = value(mode, r3, x)
            mn[x] = e if (e >= lo32) & (e <= hi32) & (e < m) else m


@njit(cache=True)
def _centred(mode, row, wz, uz, m1c, lo, hi, cen, c):
    """Add ``dv I (u - M1)^k`` (``k = 2..cen``) of one channel into ``c[k - 2]`` (one loop per ``cen``)."""
    nx = m1c.size
    if cen == 3:
        for x in range(nx):
            dd = uz - m1c[x]
            t = _kv(mode, row, x, lo, hi)[0] * dd * dd
            c[0, x] += wz * t
            c[1, x] += wz * (t * dd)
    elif cen == 4:
        for x in range(nx):
            dd = uz - m1c[x]
            t = _kv(mode, row, x, lo, hi)[0] * dd * dd
            c[0, x] += wz * t
            t *= dd
            c[1, x] += wz * t
            c[2, x] += wz * (t * dd)
    else:
        for x in range(nx):
            dd = uz - m1c[x]
            t = _kv(mode, row, x, lo, hi)[0] * dd * dd
            c[0, x] += wz * t
            t *= dd
            c[1, x] += wz * t
            t *= dd
            c[2, x] += wz * t
            c[3, x] += wz * (t * dd)


@njit(cache=True, fastmath={"contract"})
def _centred4(mode, r0, r1, r2, r3, w, u, m1c, lo, hi, cen, c0, c1, c2, c3):  # noqa: C901 - one loop per cen
    """:func:`_centred` of four channels at once (rows ``r0..r3``, weights ``w[:4]``, coordinates
    ``u[:4]``): each accumulator ``c_k`` is loaded and stored once per four voxels."""
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    u0, u1, u2, u3 = u[0], u[1], u[2], u[3]
    nx = m1c.size
    if cen == 3:
        for x in range(nx):
            m = m1c[x]
            e0, e1, e2, e3 = u0 - m, u1 - m, u2 - m, u3 - m
            t0 = w0 * _kv(mode, r0, x, lo, hi)[0] * e0 * e0
            t1 = w1 * _kv(mode, r1, x, lo, hi)[0] * e1 * e1
            t2 = w2 * _kv(mode, r2, x, lo, hi)[0] * e2 * e2
            t3 = w3 * _kv(mode, r3, x, lo, hi)[0] * e3 * e3
            c0[x] += ((t0 + t1) + t2) + t3
            c1[x] += ((t0 * e0 + t1 * e1) + t2 * e2) + t3 * e3
    elif cen == 4:
        for x in range(nx):
            m = m1c[x]
            e0, e1, e2, e3 = u0 - m, u1 - m, u2 - m, u3 - m
            t0 = w0 * _kv(mode, r0, x, lo, hi)[0] * e0 * e0
            t1 = w1 * _kv(mode, r1, x, lo, hi)[0] * e1 * e1
            t2 = w2 * _kv(mode, r2, x, lo, hi)[0] * e2 * e2
            t3 = w3 * _kv(mode, r3, x, lo, hi)[0] * e3 * e3
            c0[x] += ((t0 + t1) + t2) + t3
            t0, t1, t2, t3 = t0 * e0, t1 * e1, t2 * e2, t3 * e3
            c1[x] += ((t0 + t1) + t2) + t3
            c2[x] += ((t0 * e0 + t1 * e1) + t2 * e2) + t3 * e3
    else:
        for x in range(nx):
            m = m1c[x]
            e0, e1, e2, e3 = u0 - m, u1 - m, u2 - m, u3 - m
            t0 = w0 * _kv(mode, r0, x, lo, hi)[0] * e0 * e0
            t1 = w1 * _kv(mode, r1, x, lo, hi)[0] * e1 * e1
            t2 = w2 * _kv(mode, r2, x, lo, hi)[0] * e2 * e2
            t3 = w3 * _kv(mode, r3, x, lo, hi)[0] * e3 * e3
            c0[x] += ((t0 + t1) + t2) + t3
            t0, t1, t2, t3 = t0 * e0, t1 * e1, t2 * e2, t3 * e3
            c1[x] += ((t0 + t1) + t2) + t3
            t0, t1, t2, t3 = t0 * e0, t1 * e1, t2 * e2, t3 * e3
            c2[x] += ((t0 + t1) + t2) + t3
            c3[x] += ((t0 * e0 + t1 * e1) + t2 * e2) + t3 * e3


@njit(parallel=True, cache=True)
def _kernel(flat, geo, dec, mode, u, w, sel, opt, slot, out, quad):  # noqa: C901 - one fused pass
    """All requested maps (``slot[order] >= 0``) of a raw block into ``out[slot, y, x]``; ``quad``
    (fused read modes only: rows are views of ``flat``) takes four channels per pass."""
    nz, ny, nx, sz, sy, sx = geo
    _, _, var_floor, ref, lo, hi = sel  # float32 bounds: the same selection of float32 voxels
    lo32, hi32 = lo, hi
    nrow, cen, want_sq, want_mx, want_mn = opt
    nan = np.float32(np.nan)
    for y in prange(ny):
        buf = scratch(flat, nx)
        cnt = np.zeros(nx, np.int64)
        s0 = np.zeros(nx)
        s1 = np.zeros(nx)
        s2 = np.zeros(nx)
        sq = np.zeros(nx)
        kw = np.zeros(nx)
        mx = np.full(nx, -np.inf, np.float32)
        mn = np.full(nx, np.inf, np.float32)
        z0 = 0
        if quad:  # fused read modes: four channels per pass over the accumulators
            while z0 + 4 <= nz:
                b = z0 * sz + y * sy
                _accumulate4(mode, row_source(mode, flat, b, sx, nx, dec, buf),
                             row_source(mode, flat, b + sz, sx, nx, dec, buf),
                             row_source(mode, flat, b + 2 * sz, sx, nx, dec, buf),
                             row_source(mode, flat, b + 3 * sz, sx, nx, dec, buf),
                             w[z0 : z0 + 4], u[z0 : z0 + 4], lo, hi, lo32, hi32, opt, cnt, s0, s1, s2, sq, kw, mx, mn)
                z0 += 4
        for z in range(z0, nz):
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            wz, uz = w[z], u[z]
            if nrow == 3:
                for x in range(nx):
                    e = value(mode, row, x)
                    k = in_range(e, lo, hi)
                    d = np.float64(e)
                    t = wz * d if k else 0.0
                    cnt[x] += k
                    s0[x] += t
                    t *= uz
                    s1[x] += t
                    s2[x] += t * uz
            elif nrow == 2:
                for x in range(nx):
                    e = value(mode, row, x)
                    k = in_range(e, lo, hi)
                    d = np.float64(e)
                    t = wz * d if k else 0.0
                    cnt[x] += k
                    s0[x] += t
                    s1[x] += t * uz
            elif nrow == 1:
                for x in range(nx):
                    e = value(mode, row, x)
                    k = in_range(e, lo, hi)
                    d = np.float64(e)
                    cnt[x] += k
                    s0[x] += wz * d if k else 0.0
            elif not (want_mx or want_mn or want_sq):
                for x in range(nx):
                    cnt[x] += in_range(value(mode, row, x), lo, hi)
            if want_sq:
                for x in range(nx):
                    e = value(mode, row, x)
                    k = in_range(e, lo, hi)
                    d = np.float64(e)
                    sq[x] += wz * d * d if k else 0.0
                    kw[x] += wz if k else 0.0
                    if nrow == 0 and not (want_mx or want_mn):
                        cnt[x] += k
            if want_mx:
                for x in range(nx):
                    v, m = value(mode, row, x), mx[x]
                    mx[x] = v if (v >= lo32) & (v <= hi32) & (v > m) else m
            if want_mn:
                for x in range(nx):
                    v, m = value(mode, row, x), mn[x]
                    mn[x] = v if (v >= lo32) & (v <= hi32) & (v < m) else m
        # orders 3-5: a second, centred pass over the row
        m1c = np.zeros(nx)
        c = np.zeros((4, nx))
        if cen:
            for x in range(nx):
                m = s1[x] / s0[x] if s0[x] != 0.0 else np.nan
                m1c[x] = m if np.isfinite(m) else 0.0
            z0 = 0
            if quad:
                cc0, cc1, cc2, cc3 = np.zeros(nx), np.zeros(nx), np.zeros(nx), np.zeros(nx)
                while z0 + 4 <= nz:
                    b = z0 * sz + y * sy
                    _centred4(mode, row_source(mode, flat, b, sx, nx, dec, buf),
                              row_source(mode, flat, b + sz, sx, nx, dec, buf),
                              row_source(mode, flat, b + 2 * sz, sx, nx, dec, buf),
                              row_source(mode, flat, b + 3 * sz, sx, nx, dec, buf),
                              w[z0 : z0 + 4], u[z0 : z0 + 4], m1c, lo, hi, cen, cc0, cc1, cc2, cc3)
                    z0 += 4
                c[0], c[1], c[2], c[3] = cc0, cc1, cc2, cc3
            for z in range(z0, nz):
                row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
                wz, uz = w[z], u[z]
                _centred(mode, row, wz, uz, m1c, lo, hi, cen, c)
        for x in range(nx):
            if nrow > 0 or not (want_mx or want_mn):
                none = cnt[x] == 0
            else:  # kept voxels are finite: an extremum left at -inf/+inf means none was kept
                none = mx[x] == -np.inf if want_mx else mn[x] == np.inf
            a = s0[x]
            bad = none or a == 0.0 or not np.isfinite(a)
            if slot[0] >= 0:
                out[slot[0], y, x] = nan if none else np.float32(a)
            m1u = s1[x] / a if a != 0.0 else np.nan
            if slot[1] >= 0:
                out[slot[1], y, x] = nan if bad else np.float32(m1u + ref)
            if slot[2] >= 0:
                var = s2[x] / a - m1u * m1u if a != 0.0 else np.nan
                if abs(var) <= var_floor:
                    var = 0.0
                out[slot[2], y, x] = nan if bad else np.float32(var)
            if cen:
                mu2 = c[0, x] / a if a != 0.0 else np.nan
                sig = np.sqrt(mu2)
                bad3 = bad or not (mu2 > var_floor)
                for kk in range(3, 6):
                    if slot[kk] >= 0:
                        val = c[kk - 2, x] / a / sig**kk - (3.0 if kk == 4 else 0.0)
                        out[slot[kk], y, x] = nan if bad3 else np.float32(val)
            if slot[6] >= 0:
                out[slot[6], y, x] = nan if none else np.float32(np.sqrt(sq[x] / kw[x]) if kw[x] != 0.0 else np.nan)
            if slot[8] >= 0:
                out[slot[8], y, x] = nan if none else mx[x]
            if slot[10] >= 0:
                out[slot[10], y, x] = nan if none else mn[x]


def moment_maps_raw(
    raw: np.ndarray,
    coords: ArrayLike,
    widths: ArrayLike,
    *,
    orders: Iterable[int],
    threshold: float | None = None,
    bscale: float = 1.0,
    bzero: float = 0.0,
    blank: int | None = None,
) -> dict[int, NDArray[np.float32]]:
    """Moment maps (reference convention) of a block of stored FITS data, in one pass.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(nz, ny, nx)`` view of the data as stored (big-endian float or scaled integers, any
        byte order, non-negative strides), e.g. :meth:`app.io.fits_reader.CubeSource.read_raw`.
        A native float32 cube works too. Not copied.
    coords, widths : array_like
        ``(nz,)`` spectral coordinates and integration weights ``dv >= 0`` (e.g. km/s).
    orders : iterable of int
        Any subset of ``{0, 1, 2, 3, 4, 5, 6, 8, 10}``, all computed in the same pass.
    threshold : float, optional
        Keep voxels with ``I >= threshold`` (data units, after scaling).
    bscale, bzero, blank
        FITS scaling and integer blank value (:func:`cpu_fallback.compiled.rawdata.raw_args`).

    Returns
    -------
    dict of int to numpy.ndarray
        ``(ny, nx)`` float32 map per order (units as in :mod:`cpu_fallback.moments`).

    Raises
    ------
    ValueError
        Bad shapes or options (as the oracle), or an unsupported raw data type.
    """
    if getattr(raw, "ndim", 0) != 3:
        raise ValueError(f"expected a (spectral, y, x) block, got {getattr(raw, 'shape', None)}")
    nz, ny_img, nx_img = raw.shape
    p = plan_axis(nz, coords, widths, orders, threshold)
    raw, _ = group_rows(raw)  # long kernel rows (same numbers)
    _, ny, nx = raw.shape
    args = raw_args(raw, bscale, bzero, blank)
    o = set(p.orders)
    slot = np.full(11, -1, np.int64)
    for i, k in enumerate(p.orders):
        slot[k] = i
    out = np.empty((len(p.orders), ny, nx), np.float32)
    if ny * nx:
        nrow = 3 if 2 in o else 2 if o & {1, 3, 4, 5} else 1 if 0 in o else 0  # orders 3-5 need M0, M1
        cen = max((k for k in o if 3 <= k <= 5), default=0)
        opt = (nrow, cen, 6 in o, 8 in o, 10 in o)
        lo = -FMAX if p.threshold is None else max(float(p.threshold), -FMAX)
        sel = (lo, FMAX, float(p.var_floor), float(p.ref), *float32_bounds(lo, FMAX))
        with runtime.threads(raw.size):
            quad = args.mode.dtype != MODE_ROW
            _kernel(args.flat, args.geo, args.dec, args.mode, p.u, p.w, sel, opt, slot, out, quad)
    out = out.reshape(len(p.orders), ny_img, nx_img)
    return {k: out[i] for i, k in enumerate(p.orders)}

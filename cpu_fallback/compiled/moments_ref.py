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
oracle does. One loop per accumulator family, each chosen outside the ``x`` loop, so the loops
vectorise.

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
from cpu_fallback.compiled.rawdata import FMAX, in_range, raw_args, row_source, scratch, value
from cpu_fallback.moments import SUPPORTED_ORDERS, _plan_axis

#: Orders this module computes (all of the reference convention).
COMPILED_ORDERS: frozenset[int] = SUPPORTED_ORDERS


@njit(parallel=True, cache=True)
def _kernel(flat, geo, dec, mode, u, w, sel, opt, slot, out):  # noqa: C901 - one fused pass
    """All requested maps (``slot[order] >= 0``) of a raw block into ``out[slot, y, x]``."""
    nz, ny, nx, sz, sy, sx = geo
    lo, hi, var_floor, ref = sel
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
        for z in range(nz):
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            wz, uz = w[z], u[z]
            if nrow == 3:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    k = in_range(d, lo, hi)
                    t = wz * d if k else 0.0
                    cnt[x] += k
                    s0[x] += t
                    t *= uz
                    s1[x] += t
                    s2[x] += t * uz
            elif nrow == 2:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    k = in_range(d, lo, hi)
                    t = wz * d if k else 0.0
                    cnt[x] += k
                    s0[x] += t
                    s1[x] += t * uz
            elif nrow == 1:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    k = in_range(d, lo, hi)
                    cnt[x] += k
                    s0[x] += wz * d if k else 0.0
            else:
                for x in range(nx):
                    cnt[x] += in_range(np.float64(value(mode, row, x)), lo, hi)
            if want_sq:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    k = in_range(d, lo, hi)
                    sq[x] += wz * d * d if k else 0.0
                    kw[x] += wz if k else 0.0
            if want_mx:
                for x in range(nx):
                    v, m = value(mode, row, x), mx[x]
                    mx[x] = v if in_range(np.float64(v), lo, hi) & (v > m) else m
            if want_mn:
                for x in range(nx):
                    v, m = value(mode, row, x), mn[x]
                    mn[x] = v if in_range(np.float64(v), lo, hi) & (v < m) else m
        # orders 3-5: a second, centred pass over the row
        m1c = np.zeros(nx)
        c = np.zeros((4, nx))
        if cen:
            for x in range(nx):
                m = s1[x] / s0[x] if s0[x] != 0.0 else np.nan
                m1c[x] = m if np.isfinite(m) else 0.0
            for z in range(nz):
                row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
                wz, uz = w[z], u[z]
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    dd = uz - m1c[x]
                    t = (d if in_range(d, lo, hi) else 0.0) * dd
                    for j in range(cen - 1):
                        t *= dd
                        c[j, x] += wz * t
        for x in range(nx):
            none = cnt[x] == 0
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
    nz, ny, nx = raw.shape
    p = _plan_axis(nz, coords, widths, orders, threshold)
    args = raw_args(raw, bscale, bzero, blank)
    o = set(p.orders)
    slot = np.full(11, -1, np.int64)
    for i, k in enumerate(p.orders):
        slot[k] = i
    out = np.empty((len(p.orders), ny, nx), np.float32)
    if ny * nx:
        nrow = 3 if o & {2, 3, 4, 5} else 2 if 1 in o else 1 if 0 in o else 0
        cen = max((k for k in o if 3 <= k <= 5), default=0)
        opt = (nrow, cen, 6 in o, 8 in o, 10 in o)
        lo = -FMAX if p.threshold is None else max(float(p.threshold), -FMAX)
        sel = (lo, FMAX, float(p.var_floor), float(p.ref))
        with runtime.threads(raw.size):
            _kernel(args.flat, args.geo, args.dec, args.mode, p.u, p.w, sel, opt, slot, out)
    return {k: out[i] for i, k in enumerate(p.orders)}

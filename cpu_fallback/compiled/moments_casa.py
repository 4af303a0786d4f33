"""Moment maps, CASA ``immoments`` convention, compiled: any set of moments in one pass over raw data.

Same definitions, single-precision quirks, pixel selection and blanking as the oracle
:func:`cpu_fallback.casa_moments.casa_moment_maps` (its docstring has the table): voxels are kept
if finite and inside ``include`` (ends kept) or outside ``exclude`` (ends kept); a pixel with no
kept voxel is NaN in every moment.

Every moment, -1 to 11. The sums and extrema (-1, 0, 1, 2, 5-11) come from the one-pass kernel
here; the medians (3, median; 4, median coordinate) need every kept value of a spectrum and come
from :mod:`cpu_fallback.compiled.moments_casa_median` (per-pixel selection, a second pass when
both kinds are asked).

Algorithm. ``prange`` over rows; per channel the row is decoded from the stored bytes
(:mod:`cpu_fallback.compiled.rawdata`) and added, in channel order, into per-pixel float64
accumulators ``n, s0 = sum x, s1 = sum x v, s2 = sum x v^2, sq = sum x^2`` (and ``sum x |dv|`` for
unequal widths), the first maximum/minimum and their channels. Moment 7 takes a second pass
(``sum |x - mean|`` with float32 differences, as CASA). Sums are accumulated in channel order, as
the oracle's ``np.add.reduce`` over the spectral axis does, so the maps agree with the oracle to
float32 rounding (the tests allow ``2e-5`` relative); extrema, coordinates and NaN positions are
identical.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from cpu_fallback.compiled import moments_casa_median, runtime
from cpu_fallback.compiled.rawdata import FMAX, group_rows, kept, raw_args, row_source, scratch, value
from kernel_common.moment_plans import plan_casa

#: CASA moments this module computes: all of them.
COMPILED_MOMENTS: frozenset[int] = frozenset(range(-1, 12))
#: Those of the one-pass sums-and-extrema kernel (the medians 3 and 4 have their own).
SUM_MOMENTS: frozenset[int] = frozenset({-1, 0, 1, 2, 5, 6, 7, 8, 9, 10, 11})


@njit(parallel=True, cache=True)
def _kernel(flat, geo, dec, mode, v, aw, sel, opt, slot, out):  # noqa: C901 - one fused pass
    """All requested moments (``slot[m + 1] >= 0``) of a raw block into ``out[slot, y, x]``."""
    nz, ny, nx, sz, sy, sx = geo
    lo, hi, xlo, xhi, width = sel
    want_sums, want_sq, want_w, want_mx, want_mn, want_dev = opt
    nan = np.float32(np.nan)
    for y in prange(ny):
        buf = scratch(flat, nx)
        cnt = np.zeros(nx, np.int64)
        s0 = np.zeros(nx)
        s1 = np.zeros(nx)
        s2 = np.zeros(nx)
        sq = np.zeros(nx)
        sw = np.zeros(nx)
        mx = np.full(nx, -np.inf, np.float32)
        mn = np.full(nx, np.inf, np.float32)
        imx = np.zeros(nx, np.int64)
        imn = np.zeros(nx, np.int64)
        for z in range(nz):
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            vz, wz = v[z], aw[z]
            if want_sums:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    k = kept(d, lo, hi, xlo, xhi)
                    t = d if k else 0.0
                    cnt[x] += k
                    s0[x] += t
                    t *= vz
                    s1[x] += t
                    s2[x] += t * vz
            else:
                for x in range(nx):
                    cnt[x] += kept(np.float64(value(mode, row, x)), lo, hi, xlo, xhi)
            if want_sq:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    sq[x] += d * d if kept(d, lo, hi, xlo, xhi) else 0.0
            if want_w:
                for x in range(nx):
                    d = np.float64(value(mode, row, x))
                    sw[x] += d * wz if kept(d, lo, hi, xlo, xhi) else 0.0
            if want_mx:
                for x in range(nx):
                    e, m = value(mode, row, x), mx[x]
                    up = kept(np.float64(e), lo, hi, xlo, xhi) & (e > m)
                    mx[x] = e if up else m
                    imx[x] = z if up else imx[x]
            if want_mn:
                for x in range(nx):
                    e, m = value(mode, row, x), mn[x]
                    up = kept(np.float64(e), lo, hi, xlo, xhi) & (e < m)
                    mn[x] = e if up else m
                    imn[x] = z if up else imn[x]
        dev = np.zeros(nx)
        if want_dev:  # moment 7: sum |x - mean| over kept voxels, float32 differences
            mean32 = np.empty(nx, np.float32)
            for x in range(nx):
                mean32[x] = np.float32(s0[x] / max(cnt[x], 1))
            for z in range(nz):
                row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
                for x in range(nx):
                    e = value(mode, row, x)
                    dd = np.float64(abs(e - mean32[x]))
                    dev[x] += dd if kept(np.float64(e), lo, hi, xlo, xhi) else 0.0
        for x in range(nx):
            n = cnt[x]
            if n == 0:
                for j in range(13):
                    if slot[j] >= 0:
                        out[slot[j], y, x] = nan
                continue
            a = s0[x]
            nn = np.float64(n)
            if slot[0] >= 0:
                out[slot[0], y, x] = np.float32(a / nn)
            if slot[1] >= 0:
                out[slot[1], y, x] = np.float32(a * width) if width >= 0.0 else np.float32(sw[x])
            m1 = np.float32(s1[x] / a) if a != 0.0 else nan
            if slot[2] >= 0:
                out[slot[2], y, x] = m1 if a != 0.0 else nan
            if slot[3] >= 0:
                disp = np.float32(abs(np.float32(s2[x] / a - np.float64(m1 * m1)))) if a != 0.0 else nan
                out[slot[3], y, x] = np.sqrt(disp) if (a != 0.0 and disp > 0) else nan
            if slot[6] >= 0:
                var = (sq[x] - a * a / nn) / max(n - 1, 1)
                out[slot[6], y, x] = np.float32(np.sqrt(var)) if (n > 1 and np.float32(var) > 0) else nan
            if slot[7] >= 0:
                out[slot[7], y, x] = np.float32(np.sqrt(sq[x] / nn))
            if slot[8] >= 0:
                out[slot[8], y, x] = np.float32(dev[x] / nn)
            if slot[9] >= 0:
                out[slot[9], y, x] = mx[x]
            if slot[10] >= 0:
                out[slot[10], y, x] = np.float32(v[imx[x]])
            if slot[11] >= 0:
                out[slot[11], y, x] = mn[x]
            if slot[12] >= 0:
                out[slot[12], y, x] = np.float32(v[imn[x]])


def casa_moment_maps_raw(
    raw: np.ndarray,
    coords: ArrayLike,
    widths: ArrayLike,
    *,
    moments: Iterable[int],
    include: float | Sequence[float] | None = None,
    exclude: float | Sequence[float] | None = None,
    bscale: float = 1.0,
    bzero: float = 0.0,
    blank: int | None = None,
) -> dict[int, NDArray[np.float32]]:
    """CASA ``immoments`` maps of a block of stored FITS data, in one pass (module docstring).

    Parameters
    ----------
    raw : numpy.ndarray
        ``(nz, ny, nx)`` view of the data as stored (any byte order, scaled integers allowed).
    coords, widths : array_like
        ``(nz,)`` coordinates (CASA: km/s) and channel widths (only ``|dv|`` is used).
    moments : iterable of int
        Any subset of ``-1 .. 11`` (:data:`COMPILED_MOMENTS`).
    include, exclude : float, sequence of float or None
        immoments ``includepix`` / ``excludepix`` (data units), at most one.
    bscale, bzero, blank
        FITS scaling and integer blank value.

    Returns
    -------
    dict of int to numpy.ndarray
        ``(ny, nx)`` float32 map per moment, NaN where CASA masks.

    Raises
    ------
    ValueError
        As the oracle (e.g. moment 4 without a one-signed range), or an unsupported data type.
    """
    if getattr(raw, "ndim", 0) != 3:
        raise ValueError(f"expected a (spectral, y, x) block, got {getattr(raw, 'shape', None)}")
    moms, v, width, w, rng, is_include = plan_casa(raw, coords, widths, moments, include, exclude)
    nz, ny, nx = raw.shape
    args = raw_args(raw, bscale, bzero, blank)
    m = set(moms)
    slot = np.full(13, -1, np.int64)
    for i, k in enumerate(moms):
        slot[k + 1] = i
    out = np.empty((len(moms), ny, nx), np.float32)
    if ny * nx:
        if rng is None:
            sel = (-FMAX, FMAX, 0.0, 0.0)
        elif is_include:
            sel = (max(rng[0], -FMAX), min(rng[1], FMAX), 0.0, 0.0)
        else:
            sel = (-FMAX, FMAX, float(rng[0]), float(rng[1]))
        want_w = 0 in m and width is None
        opt = (bool(m & {-1, 0, 1, 2, 5, 6, 7}), bool(m & {5, 6}), want_w, bool(m & {8, 9}), bool(m & {10, 11}),
               7 in m)
        with runtime.threads(raw.size):
            if m & SUM_MOMENTS:  # on long kernel rows (same numbers; the medians keep image rows)
                grouped, _ = group_rows(raw)
                g = raw_args(grouped, bscale, bzero, blank)
                _kernel(g.flat, g.geo, g.dec, g.mode, v, w, (*sel, -1.0 if width is None else float(width)), opt, slot,
                        out.reshape(len(moms), grouped.shape[1], grouped.shape[2]))
            if m & {3, 4}:
                moments_casa_median.kernel(args.flat, args.geo, args.dec, args.mode, v, sel, slot[4], slot[5], out)
    return {k: out[i] for i, k in enumerate(moms)}

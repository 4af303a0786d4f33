"""Per-pixel spectral baseline, compiled: normal equations in one pass, solve per pixel, residual streamed.

Same model, fallback rules and outputs as the oracle :func:`cpu_fallback.baseline.subtract_baseline`
(read :mod:`cpu_fallback.baseline` for the Legendre model and :mod:`kernel_common.baseline_model`
for the never-extrapolate rules: order ``min(K, n - 2)`` when the usable line-free channels
bracket the spectrum's finite span, order 0 when they do not, unchanged with fewer than 2).

Algorithm. ``prange`` over rows ``y``; per row, pixels ``x`` are the vector lanes.

1. **One pass** over the channels, each row decoded from the stored bytes
   (:mod:`cpu_fallback.compiled.rawdata`), accumulates per pixel the first and last finite channel,
   and at the line-free channels the usable count ``n``, the first/last usable channel, the upper
   triangle of ``G = sum_c w_c v_c v_c^T`` and ``r = sum_c w_c I_c v_c`` (float64; ``v_c`` the
   Legendre row, ``w_c`` 1 for a finite sample). The median method keeps the usable samples.
2. Per pixel the fallback order is chosen and the leading ``(j+1) x (j+1)`` system solved by
   Cholesky (the arithmetic of :func:`kernel_common.linalg.cholesky_solve`; NaN coefficients when
   it is not positive definite), or the median of the usable samples is taken.
3. **A second pass** streams the residual ``I_c - sum_j a_j P_j(t_c)`` (float64, stored float32)
   into the output slab and sums the line-free RMS partial and the residual range on the way.

Numerics. The oracle forms ``G`` and ``r`` by matrix products and the baseline by ``vall @ coef``;
here they are summed channel by channel, so coefficients agree to float64 rounding relative to
the conditioning of ``G`` and the float32 residuals within one float32 rounding of the spectrum's
magnitude (tests: ``|a - b| <= 1e-6 (|I| + |b|)``, the RMS partial ``1e-10`` relative). The
fallback outcomes (integers) and the NaN positions are identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.rawdata import FMAX, raw_args, row_source, scratch, value
from kernel_common.baseline_model import check_args, legendre_rows


@njit(cache=True)
def _solve(g, r, j, a):
    """Cholesky solve of the leading ``(j+1)`` system of ``g``/``r`` into ``a[:j+1]``; False if not SPD."""
    m = j + 1
    low = np.zeros((m, m))
    for c in range(m):
        s = 0.0
        for q in range(c):
            s += low[c, q] * low[c, q]
        d = g[c, c] - s
        if not d > 0:
            return False
        low[c, c] = np.sqrt(d)
        for i in range(c + 1, m):
            s = 0.0
            for q in range(c):
                s += low[i, q] * low[c, q]
            low[i, c] = (g[i, c] - s) / low[c, c]
    z = np.empty(m)
    for i in range(m):
        s = 0.0
        for q in range(i):
            s += low[i, q] * z[q]
        z[i] = (r[i] - s) / low[i, i]
    for i in range(m - 1, -1, -1):
        s = 0.0
        for q in range(i + 1, m):
            s += low[q, i] * a[q]
        a[i] = (z[i] - s) / low[i, i]
    return True


@njit(parallel=True, cache=True)
def _kernel(flat, geo, dec, mode, lfidx, v, vv, pa, pb, vall, order, median, out, rows, outcome):  # noqa: C901
    """Fit and subtract every pixel of the block; per-row partials into ``rows``/``outcome``."""
    nz, ny, nx, sz, sy, sx = geo
    k = v.shape[1]
    npair = vv.shape[1]
    nl = v.shape[0]
    nan32 = np.float32(np.nan)
    for y in prange(ny):
        buf = scratch(flat, nx)
        first = np.full(nx, nz, np.int64)
        last = np.full(nx, -1, np.int64)
        cnt = np.zeros(nx, np.int64)
        ulo = np.full(nx, nz, np.int64)
        uhi = np.full(nx, -1, np.int64)
        gp = np.zeros((npair, nx))
        rp = np.zeros((k, nx))
        keep = np.empty((nl if median else 0, nx))
        for z in range(nz):
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            j = lfidx[z]
            for x in range(nx):
                d = np.float64(value(mode, row, x))
                f = (d >= -FMAX) & (d <= FMAX)
                first[x] = z if (f & (first[x] == nz)) else first[x]
                last[x] = z if f else last[x]
            if j < 0:
                continue
            for x in range(nx):
                d = np.float64(value(mode, row, x))
                f = (d >= -FMAX) & (d <= FMAX)
                cnt[x] += f
                ulo[x] = z if (f & (ulo[x] == nz)) else ulo[x]
                uhi[x] = z if f else uhi[x]
            if median:
                for x in range(nx):
                    keep[j, x] = np.float64(value(mode, row, x))
            else:
                for p in range(npair):
                    w = vv[j, p]
                    for x in range(nx):
                        d = np.float64(value(mode, row, x))
                        gp[p, x] += w if (d >= -FMAX) & (d <= FMAX) else 0.0
                for i in range(k):
                    w = v[j, i]
                    for x in range(nx):
                        d = np.float64(value(mode, row, x))
                        rp[i, x] += d * w if (d >= -FMAX) & (d <= FMAX) else 0.0
        # per pixel: outcome and coefficients (NaN where singular)
        coef = np.zeros((k, nx))
        chosen = np.full(nx, -1, np.int64)
        g = np.empty((k, k))
        r = np.empty(k)
        a = np.empty(k)
        vals = np.empty(max(nl, 1))
        for x in range(nx):
            n = cnt[x]
            if n < 2:
                continue
            if median:
                m = 0
                for jj in range(nl):
                    d = keep[jj, x]
                    if (d >= -FMAX) & (d <= FMAX):
                        vals[m] = d
                        m += 1
                s = np.sort(vals[:m])
                coef[0, x] = 0.5 * (s[(m - 1) // 2] + s[m // 2])
                chosen[x] = 0
                continue
            brackets = (ulo[x] <= first[x]) & (uhi[x] >= last[x])
            jo = min(order, n - 2) if brackets else 0
            chosen[x] = jo
            for p in range(npair):
                g[pa[p], pb[p]] = gp[p, x]
                g[pb[p], pa[p]] = gp[p, x]
            for i in range(k):
                r[i] = rp[i, x]
                a[i] = 0.0
            if _solve(g, r, jo, a):
                for i in range(k):
                    coef[i, x] = a[i]
            else:
                for i in range(k):
                    coef[i, x] = np.nan
        for x in range(nx):
            outcome[y, chosen[x] + 1] += 1
        # second pass: residual, RMS partial and range
        s_before = 0.0
        s_after = 0.0
        n_rms = 0
        lo = np.inf
        hi = -np.inf
        base = np.empty(nx)
        for z in range(nz):
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            base[:] = 0.0
            for i in range(k):
                w = vall[z, i]
                for x in range(nx):
                    base[x] += w * coef[i, x] if chosen[x] >= 0 else 0.0
            lf = lfidx[z] >= 0
            for x in range(nx):
                d = np.float64(value(mode, row, x))
                fin = (d >= -FMAX) & (d <= FMAX)
                res = d - base[x]
                o = np.float32(res) if fin else nan32
                out[z, y, x] = o
                if np.isfinite(o):
                    lo = min(lo, np.float64(o))
                    hi = max(hi, np.float64(o))
                if lf and fin and chosen[x] >= 0 and np.isfinite(res):
                    s_before += d * d
                    s_after += res * res
                    n_rms += 1
        rows[y, 0] = s_before
        rows[y, 1] = s_after
        rows[y, 2] = n_rms
        rows[y, 3] = lo
        rows[y, 4] = hi


def subtract_baseline_raw(
    raw: np.ndarray,
    line_free: ArrayLike,
    *,
    order: int = 1,
    method: str = "polynomial",
    bscale: float = 1.0,
    bzero: float = 0.0,
    blank: int | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float64], NDArray[np.float64]]:
    """Fit and subtract the baseline of every pixel of a stored block (module docstring).

    Parameters
    ----------
    raw : numpy.ndarray
        ``(nz, ny, nx)`` view of the data as stored (any byte order, scaled integers allowed,
        non-negative strides), e.g. a y-slab of a FITS memmap; a native float32 block works too.
    line_free : array_like of int
        Line-free channel indices into axis 0 (duplicates ignored).
    order : int, optional
        Polynomial order ``K >= 0`` (ignored for ``median``). Default 1.
    method : {"polynomial", "median"}, optional
        Default ``"polynomial"``.
    bscale, bzero, blank
        FITS scaling and integer blank value (:func:`cpu_fallback.compiled.rawdata.raw_args`).

    Returns
    -------
    residual : numpy.ndarray
        ``(nz, ny, nx)`` float32 ``I - b`` as :func:`cpu_fallback.baseline.subtract_baseline`.
    rms_partial : numpy.ndarray
        float64 ``(4 + K + 1,)`` ``[sum I^2, sum (I - b)^2, n, unchanged, order 0, ..., order K]``
        (the oracle's layout; reduce with :func:`cpu_fallback.baseline.baseline_rms_combine`).
    data_range : numpy.ndarray
        float64 ``(2,)`` smallest and largest finite residual (``inf``, ``-inf`` if none).

    Raises
    ------
    ValueError
        As the oracle (shape, method, order, indices, too few line-free channels), or an
        unsupported stored data type.
    """
    shape = getattr(raw, "shape", ())
    lf, k = check_args(shape, line_free, order, method)
    nz, ny, nx = shape
    args = raw_args(raw, bscale, bzero, blank)
    v = legendre_rows(lf, lf, k)
    vall = legendre_rows(np.arange(nz), lf, k)
    pa, pb = (np.asarray(t, dtype=np.int64) for t in np.triu_indices(k))
    vv = np.ascontiguousarray(v[:, pa] * v[:, pb])
    lfidx = np.full(nz, -1, np.int64)
    lfidx[lf] = np.arange(lf.size)
    out = np.empty((nz, ny, nx), np.float32)
    rows = np.zeros((ny, 5))
    outcome = np.zeros((ny, k + 1), np.int64)
    if ny * nx:
        with runtime.threads(raw.size):
            _kernel(args.flat, args.geo, args.dec, args.mode, lfidx, np.ascontiguousarray(v), vv, pa, pb,
                    np.ascontiguousarray(vall), k - 1, method == "median", out, rows, outcome)
    partial = np.concatenate([rows[:, :3].sum(axis=0), outcome.sum(axis=0).astype(np.float64)])
    data_range = np.array([rows[:, 3].min(initial=np.inf), rows[:, 4].max(initial=-np.inf)])
    return out, partial, data_range

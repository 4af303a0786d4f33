"""Per-pixel spectral baseline: validation, Legendre basis, fallback orders and block fit/subtraction.

Written once for both kernel trees (:mod:`cpu_fallback.baseline` passes ``numpy``,
:mod:`gpu_kernels.baseline` passes ``cupy``); the model is documented in
:mod:`cpu_fallback.baseline`.

**Never extrapolate.** Per spectrum, with ``L_p`` its *usable* line-free channels (finite) and
``[f_p, l_p]`` the span of its finite channels (the range the baseline is subtracted from):

* ``polynomial`` of order ``K``: if ``L_p`` brackets the span (``min L_p <= f_p`` and
  ``max L_p >= l_p``) the order is ``min(K, |L_p| - 2)`` (at least ``order + 2`` samples per
  fitted order); if it does not, the order falls back to 0 (a constant does not extrapolate a
  slope); with fewer than 2 usable samples the spectrum is left **unchanged**;
* ``median``: order 0 with at least 2 usable samples, else unchanged.

Lower orders use the first terms of the same Legendre basis, so their coefficients are the
fitted ones followed by zeros. Per block the outcome counts ``[unchanged, order 0, ..., order K]``
travel in the RMS partial (``rms_partial[3:]``), so a chunked run sums them like the RMS sums.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernel_common.linalg import cholesky_solve
from kernel_common.robust import row_median

METHODS = ("polynomial", "median")


def check_args(shape: tuple[int, ...], line_free: np.ndarray, order: int, method: str) -> tuple[np.ndarray, int]:
    """Validate; return the sorted unique host line-free indices and the number of terms ``K + 1``.

    Raises
    ------
    ValueError
        Not a ``(spectral, y, x)`` cube; unknown method; negative or non-integer order; indices
        outside ``[0, nz - 1]``; fewer than ``order + 2`` distinct line-free channels.
    """
    if len(shape) != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {tuple(shape)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(order) != order or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    k = 1 if method == "median" else int(order) + 1
    lf = np.unique(np.asarray(line_free, dtype=np.int64).ravel())
    if lf.size and (lf[0] < 0 or lf[-1] >= shape[0]):
        raise ValueError(f"line-free channel indices must lie in [0, {shape[0] - 1}]")
    if lf.size < k + 1:
        raise ValueError(f"{lf.size} line-free channels are too few for {method} order {k - 1}")
    return lf, k


def legendre_rows(c: np.ndarray, lf: np.ndarray, k: int) -> np.ndarray:
    """Host ``(len(c), k)`` Legendre rows ``P_j(t(c))``, ``t`` mapping ``[lf[0], lf[-1]]`` to ``[-1, 1]``.

    ``t(c) = (2 c - (lo + hi)) / (hi - lo)``; ``t = 0`` for a single line-free channel.
    """
    lo, hi = float(lf[0]), float(lf[-1])
    c = np.asarray(c, dtype=np.float64)
    t = (2.0 * c - (lo + hi)) / (hi - lo) if hi > lo else np.zeros_like(c)
    return np.polynomial.legendre.legvander(t, k - 1)


def column_blocks(npix: int, nz: int, block_elements: int) -> list[slice]:
    """Pixel (column) slices of about ``block_elements`` samples each."""
    step = max(1, block_elements // max(1, nz))
    return [slice(i, min(i + step, npix)) for i in range(0, npix, step)]


def finite_span(y: Any, xp: Any) -> tuple[Any, Any]:
    """First and last finite channel of each column of ``y`` ``(nz, B)`` (``nz`` / -1 if none)."""
    nz = y.shape[0]
    c = xp.arange(nz)[:, None]
    fin = xp.isfinite(y)
    return xp.where(fin, c, nz).min(axis=0), xp.where(fin, c, -1).max(axis=0)


def outcome_orders(fin: Any, lf: Any, y: Any, order: int, method: str, xp: Any) -> Any:
    """Order fitted per column (-1: unchanged) by the rules of the module notes.

    Parameters
    ----------
    fin : array of bool
        ``(nL, B)`` usable (finite) line-free samples.
    lf : array
        ``(nL,)`` line-free channel indices (on the array's device).
    y : array
        ``(nz, B)`` the spectra (any float dtype), for the span of their finite channels.
    order : int
        Requested polynomial order ``K`` (0 for the median).
    method : str
        ``polynomial`` or ``median``.
    xp : module
        ``numpy`` or ``cupy``.
    """
    n = fin.sum(axis=0)
    if method == "median":
        return xp.where(n >= 2, 0, -1)
    nz = y.shape[0]
    lfc = lf[:, None]
    lo = xp.where(fin, lfc, nz).min(axis=0)
    hi = xp.where(fin, lfc, -1).max(axis=0)
    # usable channels reaching both band edges bracket every span: only the others are checked
    check = (lo > 0) | (hi < nz - 1)
    if xp is np:  # the same values as the full computation, on the columns that need it
        brackets = np.ones(n.shape, dtype=bool)
        cols = np.flatnonzero(check)
        if cols.size:
            first, last = finite_span(y[:, cols], np)
            brackets[cols] = (lo[cols] <= first) & (hi[cols] >= last)
    else:
        first, last = finite_span(y, xp)
        brackets = ~check | ((lo <= first) & (hi >= last))
    chosen = xp.where(brackets, xp.minimum(order, n - 2), 0)
    return xp.where(n >= 2, chosen, -1)


def fit_block(yl: Any, v: Any, chosen: Any, method: str, xp: Any) -> Any:
    """Coefficients ``(k, B)`` for the line-free samples ``yl`` ``(nL, B)`` (float64, NaN = blank).

    Order ``j = chosen[p]`` uses the first ``j + 1`` basis columns of ``v`` ``(nL, k)`` (the
    rest 0); NaN columns where ``chosen < 0`` (unchanged) or the system is singular.
    """
    nl, k = v.shape
    fin = xp.isfinite(yl)
    if method == "median":
        coef = row_median(yl.T, xp, valid=fin.T)[None, :]
    else:
        w = fin.astype(xp.float64)
        gram = (w.T @ (v[:, :, None] * v[:, None, :]).reshape(nl, k * k)).reshape(-1, k, k)
        rhs = xp.where(fin, yl, 0.0).T @ v
        coef = xp.zeros((k, yl.shape[1]))
        for j in range(k):  # every order a column falls back to; the same arithmetic as order K alone
            if j < k - 1 and not bool((chosen == j).any()):  # sync (one flag per order)
                continue
            sol = cholesky_solve(gram[:, : j + 1, : j + 1], rhs[:, : j + 1], xp).T
            coef[: j + 1] = xp.where((chosen == j)[None, :], sol, coef[: j + 1])
    return xp.where((chosen < 0)[None, :], xp.nan, coef)


def subtract_block(y: Any, lf: Any, v: Any, vall: Any, order: int, method: str, xp: Any) -> tuple[Any, Any]:
    """Residual ``(nz, B)`` float64 and partial ``[sum I^2, sum r^2, n, unchanged, order 0..K]``.

    ``y``: float64 block ``(nz, B)``; ``lf``: line-free indices on the device; ``v``/``vall``:
    Legendre rows of the line-free / all channels. Unchanged spectra keep their values; the RMS
    sums run over the finite line-free samples of the fitted spectra.
    """
    yl = y[lf]
    fin = xp.isfinite(yl)
    chosen = outcome_orders(fin, lf, y, order, method, xp)
    coef = fit_block(yl, v, chosen, method, xp)
    base = vall @ xp.where((chosen < 0)[None, :], 0.0, coef)
    res = xp.where(xp.isfinite(y), y - base, xp.nan)
    rl = res[lf]
    sel = xp.isfinite(rl) & (chosen >= 0)[None, :]
    before, after = xp.where(sel, yl, 0.0), xp.where(sel, rl, 0.0)
    counts = xp.bincount(chosen + 1, minlength=order + 2).astype(xp.float64)
    head = xp.stack([xp.sum(before * before), xp.sum(after * after), sel.sum().astype(xp.float64)])
    return res, xp.concatenate([head, counts])


def outcome_counts(partial: Any, order: int, method: str) -> dict[str, int]:
    """``{"order_K": n, ..., "order_0": n, "unchanged": n}`` from a (combined) host partial."""
    p = np.asarray(partial, dtype=np.float64)
    top = 0 if method == "median" else int(order)
    counts = {f"order_{j}": int(round(p[4 + j])) if p.size > 4 + j else 0 for j in range(top, -1, -1)}
    counts["unchanged"] = int(round(p[3])) if p.size > 3 else 0
    return counts


def fit_columns(flat: Any, lf: np.ndarray, k: int, method: str, xp: Any, block_elements: int) -> Any:
    """Coefficients ``(k, npix)`` of every column of ``flat`` ``(nz, npix)``, block by block."""
    nz, npix = flat.shape
    v = xp.asarray(legendre_rows(lf, lf, k))
    lfd = xp.asarray(lf)
    coef = xp.empty((k, npix))
    for sl in column_blocks(npix, nz, block_elements):
        yl = flat[lfd, sl].astype(xp.float64)
        chosen = outcome_orders(xp.isfinite(yl), lfd, flat[:, sl], k - 1, method, xp)
        coef[:, sl] = fit_block(yl, v, chosen, method, xp)
    return coef


def subtract_columns(flat: Any, lf: np.ndarray, k: int, method: str, xp: Any, block_elements: int) -> tuple[Any, Any]:
    """float32 residual ``(nz, npix)`` and the summed partial of :func:`subtract_block`, block by block."""
    nz, npix = flat.shape
    v = xp.asarray(legendre_rows(lf, lf, k))
    vall = xp.asarray(legendre_rows(np.arange(nz), lf, k))
    lfd = xp.asarray(lf)
    out = xp.empty((nz, npix), dtype=xp.float32)
    part = xp.zeros(4 + k)
    for sl in column_blocks(npix, nz, block_elements):
        with np.errstate(invalid="ignore"):
            res, p = subtract_block(flat[:, sl].astype(xp.float64), lfd, v, vall, k - 1, method, xp)
        out[:, sl] = res
        part += p
    return out, part


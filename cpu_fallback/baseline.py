"""Per-pixel spectral baseline fit and subtraction on the CPU (NumPy reference).

Backs ``POST /v1/spectral/baseline/{session_id}/{dataset_id}`` (client contract §6.3). The
service crops the channel range, turns ``line_free_channels`` (flat list or inclusive ranges)
into sorted unique channel indices of the cropped cube and passes them here.

Model, per spatial pixel ``p`` and channel ``c`` (shared with :mod:`gpu_kernels.baseline`):

* ``polynomial``: ``b_p(c) = sum_k a_pk P_k(t(c))`` with Legendre polynomials ``P_k``,
  ``k = 0..order``, on the rescaled channel coordinate
  ``t(c) = (2 c - (c_lo + c_hi)) / (c_hi - c_lo)`` so the line-free span ``[c_lo, c_hi]``
  maps to ``[-1, 1]`` (``t = 0`` for a single line-free channel). The coefficients minimise
  ``sum_{c in L, I_pc finite} (I_pc - b_p(c))^2``; a least-squares polynomial does not depend
  on the basis, so this equals a monomial fit in raw channel numbers (CASA ``imcontsub``).
* ``median``: ``b_p = median{I_pc : c in L, I_pc finite}`` (order 0, robust).

Pixels with fewer than ``order + 2`` finite line-free samples (2 for ``median``) are NaN in
every channel. Everything is float64 inside; the subtracted cube is float32.

Batched least squares: the normal equations ``G_p a_p = r_p`` with
``G_p = sum_c w_pc v_c v_c^T`` and ``r_p = sum_c w_pc I_pc v_c`` (``v_c`` the Legendre row,
``w_pc`` 1 for finite samples) are formed for all pixels with two matrix products and solved by
a batched Cholesky factorisation (``(order+1)^2`` small array operations, no pixel loop).

Chunking: every pixel is independent, so a y-slab gives the whole-cube result for its pixels;
the line-free RMS is a reduction with ``baseline_rms_combine``/``baseline_rms_finalize``.
"""

from __future__ import annotations

import numpy as np

from kernel_common.linalg import cholesky_solve
from kernel_common.robust import row_median

_Array = np.ndarray
_METHODS = ("polynomial", "median")
_BLOCK_ELEMENTS = 1 << 20


def fit_baseline(cube: _Array, line_free: _Array, *, order: int = 1, method: str = "polynomial") -> _Array:
    """Per-pixel baseline coefficients over the line-free channels.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities; non-finite values are blank.
    line_free : numpy.ndarray
        1-D integer channel indices into axis 0 (duplicates ignored).
    order : int, optional
        Polynomial order ``>= 0`` (ignored for ``median``). Default 1.
    method : {"polynomial", "median"}, optional
        Default ``"polynomial"``.

    Returns
    -------
    numpy.ndarray
        float64 ``(order + 1, ny, nx)`` Legendre coefficients ``a_k`` on ``t`` (see module
        notes), or ``(1, ny, nx)`` medians; NaN for pixels with too few usable samples.

    Raises
    ------
    ValueError
        Bad cube shape, method or order; indices out of range; fewer than ``order + 2``
        distinct line-free channels.
    """
    a = np.asarray(cube)
    lf, k = _check(a, line_free, order, method)
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    flat = a.reshape(nz, npix)
    v = np.polynomial.legendre.legvander(_t(lf, lf), k - 1)
    coef = np.empty((k, npix))
    for sl in _blocks(npix, nz):
        coef[:, sl] = _fit_block(np.asarray(flat[lf, sl], dtype=np.float64), v, method)
    return coef.reshape(k, a.shape[1], a.shape[2])


def subtract_baseline(
    cube: _Array, line_free: _Array, *, order: int = 1, method: str = "polynomial"
) -> tuple[_Array, _Array]:
    """Subtract the fitted baseline from every channel of every pixel.

    Parameters
    ----------
    cube, line_free, order, method
        As for :func:`fit_baseline`.

    Returns
    -------
    residual : numpy.ndarray
        ``(nz, ny, nx)`` float32 ``I_pc - b_p(c)`` (extrapolated outside ``[c_lo, c_hi]``);
        NaN where ``I_pc`` is blank or the pixel has too few usable samples.
    rms_partial : numpy.ndarray
        float64 ``(3,)``: ``[sum I^2, sum (I - b)^2, n]`` over the finite line-free samples of
        the fitted pixels; reduce with :func:`baseline_rms_combine` and
        :func:`baseline_rms_finalize`.
    """
    a = np.asarray(cube)
    lf, k = _check(a, line_free, order, method)
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    flat = a.reshape(nz, npix)
    v = np.polynomial.legendre.legvander(_t(lf, lf), k - 1)
    vall = np.polynomial.legendre.legvander(_t(np.arange(nz), lf), k - 1)
    out = np.empty((nz, npix), dtype=np.float32)
    part = np.zeros(3)
    for sl in _blocks(npix, nz):
        y = np.asarray(flat[:, sl], dtype=np.float64)
        coef = _fit_block(y[lf], v, method)
        res = np.where(np.isfinite(y), y - (vall @ coef), np.nan)
        out[:, sl] = res
        sel = np.isfinite(res[lf])
        before, after = np.where(sel, y[lf], 0.0), np.where(sel, res[lf], 0.0)
        part += [np.sum(before * before), np.sum(after * after), np.count_nonzero(sel)]
    return out.reshape(a.shape), part


def baseline_rms_combine(a: _Array, b: _Array) -> _Array:
    """Combine two ``rms_partial`` arrays of :func:`subtract_baseline` (elementwise sum)."""
    return np.asarray(a, dtype=np.float64) + np.asarray(b, dtype=np.float64)


def baseline_rms_finalize(partial: _Array) -> _Array:
    """Line-free RMS before and after subtraction from a (combined) ``rms_partial``.

    Returns
    -------
    numpy.ndarray
        float64 ``(2,)``: ``[sqrt(sum I^2 / n), sqrt(sum (I - b)^2 / n)]`` in data units; NaN
        when ``n == 0``.
    """
    p = np.asarray(partial, dtype=np.float64)
    if p[2] <= 0:
        return np.full(2, np.nan)
    return np.sqrt(p[:2] / p[2])


def _check(a: np.ndarray, line_free, order: int, method: str) -> tuple[np.ndarray, int]:
    """Validate the inputs; return sorted unique line-free indices and the number of terms."""
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if int(order) != order or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    k = 1 if method == "median" else int(order) + 1
    lf = np.unique(np.asarray(line_free, dtype=np.int64).ravel())
    if lf.size and (lf[0] < 0 or lf[-1] >= a.shape[0]):
        raise ValueError(f"line-free channel indices must lie in [0, {a.shape[0] - 1}]")
    if lf.size < k + 1:
        raise ValueError(f"{lf.size} line-free channels are too few for {method} order {k - 1}")
    return lf, k


def _blocks(npix: int, nz: int):
    """Column slices of about ``2**20`` samples (temporaries stay small and reusable)."""
    step = max(1, _BLOCK_ELEMENTS // max(1, nz))
    return [slice(i, min(i + step, npix)) for i in range(0, npix, step)]


def _fit_block(y: np.ndarray, v: np.ndarray, method: str) -> np.ndarray:
    """Coefficients ``(k, B)`` for line-free samples ``y`` ``(nL, B)`` (NaN-blanked) and basis ``v``."""
    nl, k = v.shape
    fin = np.isfinite(y)
    n = fin.sum(axis=0)
    if method == "median":
        coef = row_median(y.T, np, valid=fin.T)[None, :]
    else:
        w = fin.astype(np.float64)
        gram = w.T @ (v[:, :, None] * v[:, None, :]).reshape(nl, k * k)
        coef = cholesky_solve(gram.reshape(-1, k, k), np.where(fin, y, 0.0).T @ v, np).T
    return np.where((n < k + 1)[None, :], np.nan, coef)


def _t(c: np.ndarray, lf: np.ndarray) -> np.ndarray:
    """Channel coordinate rescaled so the line-free span ``[lf[0], lf[-1]]`` is ``[-1, 1]``."""
    lo, hi = float(lf[0]), float(lf[-1])
    c = np.asarray(c, dtype=np.float64)
    return (2.0 * c - (lo + hi)) / (hi - lo) if hi > lo else np.zeros_like(c)

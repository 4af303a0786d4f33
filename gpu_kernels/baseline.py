"""Per-pixel spectral baseline fit and subtraction on the GPU (CuPy).

Same public functions and signatures as :mod:`cpu_fallback.baseline`, whose module notes define
the model (Legendre polynomial on the line-free span rescaled to ``[-1, 1]``, or the line-free
median), the blanking rule and the RMS partials. Arrays in and out are CuPy arrays on the
current device; CuPy is imported inside the functions.

The arithmetic is the CPU reference's, run as CuPy array code: the Legendre rows are built on
the host with NumPy (a few hundred numbers, identical to the CPU's), the per-pixel normal
equations come from two cuBLAS matrix products and are solved by the same batched Cholesky
(``(order+1)^2`` array operations over all pixels of a block), the median by a row sort.
Blocks of about ``2**25`` samples bound the float64 temporaries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernel_common.linalg import cholesky_solve
from kernel_common.robust import row_median

_Array = Any
_METHODS = ("polynomial", "median")
_BLOCK_ELEMENTS = 1 << 25


def fit_baseline(cube: _Array, line_free: _Array, *, order: int = 1, method: str = "polynomial") -> _Array:
    """Per-pixel baseline coefficients on the device; see the CPU twin.

    Returns
    -------
    cupy.ndarray
        float64 ``(order + 1, ny, nx)`` Legendre coefficients (``(1, ny, nx)`` medians); NaN for
        pixels with fewer than ``order + 2`` finite line-free samples.
    """
    import cupy as cp

    a = cp.asarray(cube)
    lf, k = _check(a, line_free, order, method)
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    flat = a.reshape(nz, npix)
    v = cp.asarray(np.polynomial.legendre.legvander(_t(lf, lf), k - 1))
    lfd = cp.asarray(lf)
    coef = cp.empty((k, npix))
    for sl in _blocks(npix, nz):
        coef[:, sl] = _fit_block(flat[lfd, sl].astype(cp.float64), v, method)
    return coef.reshape(k, a.shape[1], a.shape[2])


def subtract_baseline(
    cube: _Array, line_free: _Array, *, order: int = 1, method: str = "polynomial"
) -> tuple[_Array, _Array]:
    """Subtract the fitted baseline from every channel on the device; see the CPU twin.

    Returns
    -------
    residual : cupy.ndarray
        ``(nz, ny, nx)`` float32 ``I - b``; NaN where blank or not fitted.
    rms_partial : cupy.ndarray
        float64 ``(3,)`` ``[sum I^2, sum (I - b)^2, n]`` over the finite line-free samples.
    """
    import cupy as cp

    a = cp.asarray(cube)
    lf, k = _check(a, line_free, order, method)
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    flat = a.reshape(nz, npix)
    v = cp.asarray(np.polynomial.legendre.legvander(_t(lf, lf), k - 1))
    vall = cp.asarray(np.polynomial.legendre.legvander(_t(np.arange(nz), lf), k - 1))
    lfd = cp.asarray(lf)
    out = cp.empty((nz, npix), dtype=cp.float32)
    part = cp.zeros(3)
    for sl in _blocks(npix, nz):
        y = flat[:, sl].astype(cp.float64)
        coef = _fit_block(y[lfd], v, method)
        res = cp.where(cp.isfinite(y), y - (vall @ coef), cp.nan)
        out[:, sl] = res
        rl, yl = res[lfd], y[lfd]
        sel = cp.isfinite(rl)
        before, after = cp.where(sel, yl, 0.0), cp.where(sel, rl, 0.0)
        part += cp.stack([cp.sum(before * before), cp.sum(after * after), cp.count_nonzero(sel)])
    return out.reshape(a.shape), part


def baseline_rms_combine(a: _Array, b: _Array) -> _Array:
    """Combine two ``rms_partial`` arrays (elementwise sum), on the device."""
    import cupy as cp

    return cp.asarray(a, dtype=cp.float64) + cp.asarray(b, dtype=cp.float64)


def baseline_rms_finalize(partial: _Array) -> _Array:
    """``[rms_before, rms_after]`` (float64 ``(2,)``, NaN when ``n == 0``) on the device."""
    import cupy as cp

    p = cp.asarray(partial, dtype=cp.float64)
    return cp.where(p[2] > 0, cp.sqrt(p[:2] / cp.where(p[2] > 0, p[2], 1.0)), cp.nan)


def _check(a: Any, line_free: Any, order: int, method: str) -> tuple[Any, int]:
    """Validate the inputs; return sorted unique host line-free indices and the term count."""
    import cupy as cp

    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if int(order) != order or order < 0:
        raise ValueError(f"order must be a non-negative integer, got {order!r}")
    k = 1 if method == "median" else int(order) + 1
    lf = np.unique(np.asarray(cp.asnumpy(line_free), dtype=np.int64).ravel())  # sync (index list)
    if lf.size and (lf[0] < 0 or lf[-1] >= a.shape[0]):
        raise ValueError(f"line-free channel indices must lie in [0, {a.shape[0] - 1}]")
    if lf.size < k + 1:
        raise ValueError(f"{lf.size} line-free channels are too few for {method} order {k - 1}")
    return lf, k


def _t(c: Any, lf: Any) -> Any:
    """Host channel coordinate rescaled so the line-free span is ``[-1, 1]`` (CPU formula)."""
    lo, hi = float(lf[0]), float(lf[-1])
    c = np.asarray(c, dtype=np.float64)
    return (2.0 * c - (lo + hi)) / (hi - lo) if hi > lo else np.zeros_like(c)


def _blocks(npix: int, nz: int) -> list[slice]:
    step = max(1, _BLOCK_ELEMENTS // max(1, nz))
    return [slice(i, min(i + step, npix)) for i in range(0, npix, step)]


def _fit_block(y: Any, v: Any, method: str) -> Any:
    """Coefficients ``(k, B)`` of line-free samples ``y`` ``(nL, B)``; CPU ``_fit_block``."""
    import cupy as cp

    nl, k = v.shape
    fin = cp.isfinite(y)
    n = fin.sum(axis=0)
    if method == "median":
        coef = row_median(y.T, cp, valid=fin.T)[None, :]
    else:
        w = fin.astype(cp.float64)
        gram = w.T @ (v[:, :, None] * v[:, None, :]).reshape(nl, k * k)
        coef = cholesky_solve(gram.reshape(-1, k, k), cp.where(fin, y, 0.0).T @ v, cp).T
    return cp.where((n < k + 1)[None, :], cp.nan, coef)  # no boolean setitem: no host sync

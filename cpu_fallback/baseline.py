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

The baseline never extrapolates (rules in :mod:`kernel_common.baseline_model`): a spectrum
whose usable (finite) line-free channels do not bracket its finite channels gets a constant
(order 0); one with fewer than ``order + 2`` usable samples gets the highest order they
support; one with fewer than 2 is left unchanged. Everything is float64 inside; the subtracted
cube is float32.

Batched least squares: the normal equations ``G_p a_p = r_p`` with
``G_p = sum_c w_pc v_c v_c^T`` and ``r_p = sum_c w_pc I_pc v_c`` (``v_c`` the Legendre row,
``w_pc`` 1 for finite samples) are formed for all pixels with two matrix products and solved by
a batched Cholesky factorisation (``(order+1)^2`` small array operations, no pixel loop).

Chunking: every pixel is independent, so a y-slab gives the whole-cube result for its pixels;
the line-free RMS is a reduction with ``baseline_rms_combine``/``baseline_rms_finalize``.
"""

from __future__ import annotations

import numpy as np

from kernel_common.baseline_model import check_args, fit_columns, subtract_columns

_Array = np.ndarray
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
        notes; a pixel that fell back to a lower order has zeros above it), or ``(1, ny, nx)``
        medians; NaN for pixels left unchanged (fewer than 2 usable samples).

    Raises
    ------
    ValueError
        Bad cube shape, method or order; indices out of range; fewer than ``order + 2``
        distinct line-free channels.
    """
    a = np.asarray(cube)
    lf, k = check_args(a.shape, line_free, order, method)
    flat = a.reshape(a.shape[0], -1)
    coef = fit_columns(flat, lf, k, method, np, _BLOCK_ELEMENTS)
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
        ``(nz, ny, nx)`` float32 ``I_pc - b_p(c)``; NaN where ``I_pc`` is blank; a spectrum left
        unchanged keeps its values.
    rms_partial : numpy.ndarray
        float64 ``(5 + K,)`` (``K`` the order, 0 for ``median``): ``[sum I^2, sum (I - b)^2, n]``
        over the finite line-free samples of the fitted pixels, then the pixel counts
        ``[unchanged, order 0, ..., order K]``; reduce with :func:`baseline_rms_combine` and
        :func:`baseline_rms_finalize`.
    """
    a = np.asarray(cube)
    lf, k = check_args(a.shape, line_free, order, method)
    out, part = subtract_columns(a.reshape(a.shape[0], -1), lf, k, method, np, _BLOCK_ELEMENTS)
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

"""Per-pixel spectral baseline fit and subtraction on the GPU (CuPy).

Same public functions and signatures as :mod:`cpu_fallback.baseline`, whose module notes define
the model (Legendre polynomial on the line-free span rescaled to ``[-1, 1]``, or the line-free
median), the blanking rule and the RMS partials. Arrays in and out are CuPy arrays on the
current device; CuPy is imported inside the functions.

The arithmetic is the CPU reference's -- the same functions of :mod:`kernel_common.baseline_model`
(fallback orders, block fit and subtraction) run with CuPy: the Legendre rows are built on the
host with NumPy (identical to the CPU's), the per-pixel normal equations come from two cuBLAS
matrix products and are solved by the shared batched Cholesky, the median by a row sort.
Blocks of about ``2**25`` samples bound the float64 temporaries.
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.baseline_model import check_args, fit_columns, subtract_columns

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-6, atol=1e-6)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("subtract_baseline", ("cube", "line_free"), {"order": 1}),
    Case("fit_baseline", ("cube", "line_free"), {"order": 2}),
    Case("subtract_baseline", ("cube", "line_free"), {"method": "median"}),
)

_Array = Any
_BLOCK_ELEMENTS = 1 << 25


def fit_baseline(cube: _Array, line_free: _Array, *, order: int = 1, method: str = "polynomial") -> _Array:
    """Per-pixel baseline coefficients on the device; see the CPU twin.

    Returns
    -------
    cupy.ndarray
        float64 ``(order + 1, ny, nx)`` Legendre coefficients (``(1, ny, nx)`` medians); zeros
        above a fallback order; NaN for pixels left unchanged.
    """
    import cupy as cp

    a = cp.asarray(cube)
    lf, k = check_args(a.shape, cp.asnumpy(line_free), order, method)  # sync (index list)
    flat = a.reshape(a.shape[0], -1)
    coef = fit_columns(flat, lf, k, method, cp, _BLOCK_ELEMENTS)
    return coef.reshape(k, a.shape[1], a.shape[2])


def subtract_baseline(
    cube: _Array, line_free: _Array, *, order: int = 1, method: str = "polynomial"
) -> tuple[_Array, _Array]:
    """Subtract the fitted baseline from every channel on the device; see the CPU twin.

    Returns
    -------
    residual : cupy.ndarray
        ``(nz, ny, nx)`` float32 ``I - b``; NaN where blank; unchanged spectra keep their values.
    rms_partial : cupy.ndarray
        float64 ``(5 + K,)`` ``[sum I^2, sum (I - b)^2, n, unchanged, order 0, ..., order K]``.
    """
    import cupy as cp

    a = cp.asarray(cube)
    lf, k = check_args(a.shape, cp.asnumpy(line_free), order, method)  # sync (index list)
    out, part = subtract_columns(a.reshape(a.shape[0], -1), lf, k, method, cp, _BLOCK_ELEMENTS)
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

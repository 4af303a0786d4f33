"""Position-velocity cut on the GPU: box-sampling gather kernel (CuPy ``RawKernel``).

Same public function and signature as :mod:`cpu_fallback.pv`. One thread per output cell
``(z, s)`` walks the ``w`` offsets across the path, reads the resident cube and writes the mean
of the finite values. Offsets use ``__dmul_rn``/``__dadd_rn`` (no FMA contraction) and the
same exact round-half-away-from-zero formula as the CPU reference, so both trees pick the same
pixels and sum the same float64 values in the same order: results agree to the last bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.compute.contract import Case, Tolerance
from kernel_common.rawcache import raw_kernel

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-6, atol=1e-7)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("pv_box_sample", ("cube", "path_x", "path_y", "normal_x", "normal_y"), {"width_pixels": 3}),)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

_THREADS = 256

_PV_SOURCE = r"""
__device__ __forceinline__ double visivo_round_half_away(double p) {
    double t = trunc(p);
    return (fabs(p - t) >= 0.5) ? t + copysign(1.0, p) : t;
}

extern "C" __global__ void KERNEL_NAME(
    const float* __restrict__ cube,
    const double* __restrict__ sample_x, const double* __restrict__ sample_y,
    const double* __restrict__ normal_x, const double* __restrict__ normal_y,
    float* __restrict__ out,
    const long long nz, const long long ny, const long long nx, const long long ns,
    const int width)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= nz * ns) return;
    const long long z = t / ns;
    const long long s = t - z * ns;
    const double sx = sample_x[s], sy = sample_y[s], nxs = normal_x[s], nys = normal_y[s];
    const double half = (double)(width - 1) * 0.5;
    const float* plane = cube + z * ny * nx;
    double acc = 0.0;
    long long cnt = 0;
    for (int k = 0; k < width; ++k) {
        const double off = (double)k - half;
        const double rx = visivo_round_half_away(__dadd_rn(sx, __dmul_rn(off, nxs)));
        const double ry = visivo_round_half_away(__dadd_rn(sy, __dmul_rn(off, nys)));
        if (!(rx >= 0.0 && rx <= (double)(nx - 1) && ry >= 0.0 && ry <= (double)(ny - 1))) continue;
        const float v = plane[(long long)ry * nx + (long long)rx];
        if (isfinite(v)) {
            acc += (double)v;
            cnt += 1;
        }
    }
    out[t] = (cnt > 0) ? (float)(acc / (double)cnt) : __int_as_float(0x7fc00000);
}
"""


def _kernel() -> Any:
    """The compiled ``visivo_pv_box_sample`` for the current device (memoised per device)."""
    return raw_kernel("pv_box_sample", _PV_SOURCE)


def pv_box_sample(
    cube: _Array,
    sample_x: _Array,
    sample_y: _Array,
    normal_x: _Array,
    normal_y: _Array,
    *,
    width_pixels: int,
) -> _Array:
    """Mean of ``width_pixels`` pixels across the path at every sample, for every channel.

    Parameters
    ----------
    cube : cupy.ndarray
        Resident ``(spectral, y, x)`` cube, C-contiguous float32 (the raw kernel ignores
        strides), data units; NaN/±inf are blank.
    sample_x, sample_y : array_like
        ``(ns,)`` sample positions in pixels (x = column, y = row, 0-based); host or device
        arrays, copied to the device as float64 (they are small).
    normal_x, normal_y : array_like
        ``(ns,)`` unit normal to the path at each sample.
    width_pixels : int
        Number ``w >= 1`` of pixels taken across the path.

    Returns
    -------
    cupy.ndarray
        ``(nz, ns)`` float32, row = channel, column = sample:
        ``PV[z, s] = mean{ cube[z, Y_k, X_k] : 0 <= k < w, in bounds, finite }`` with
        ``X_k = round(sample_x[s] + (k - (w-1)/2) * normal_x[s])`` (likewise ``Y_k``), halves
        rounded away from zero; NaN where no pixel is usable. float64 accumulation.

    Raises
    ------
    ValueError
        On a non-3-D, non-float32 or non-C-contiguous cube, mismatched sample arrays or
        ``width_pixels < 1``.
    """
    import cupy as cp

    if not isinstance(cube, cp.ndarray) or cube.ndim != 3:
        raise ValueError("pv_box_sample expects a 3-D (spectral, y, x) cupy.ndarray cube")
    if cube.dtype != cp.float32 or not cube.flags.c_contiguous:
        raise ValueError("pv_box_sample needs a C-contiguous float32 cube (raw kernel ignores strides)")
    if isinstance(width_pixels, bool) or not isinstance(width_pixels, int | np.integer) or width_pixels < 1:
        raise ValueError(f"width_pixels must be an integer >= 1, got {width_pixels!r}")
    arrs = [
        cp.ascontiguousarray(cp.asarray(v, dtype=cp.float64))
        for v in (sample_x, sample_y, normal_x, normal_y)
    ]
    if any(v.ndim != 1 or v.shape != arrs[0].shape for v in arrs):
        raise ValueError("sample_x, sample_y, normal_x, normal_y must be 1-D arrays of one length")
    nz, ny, nx = cube.shape
    ns = arrs[0].size
    out = cp.empty((nz, ns), dtype=cp.float32)
    cells = nz * ns
    if cells == 0:
        return out
    blocks = (cells + _THREADS - 1) // _THREADS
    _kernel()(
        (blocks,),
        (_THREADS,),
        (cube, *arrs, out, np.int64(nz), np.int64(ny), np.int64(nx), np.int64(ns), np.int32(width_pixels)),
    )
    return out

"""Spectral moments in the CASA ``immoments`` convention on the GPU (CuPy).

Same public function and signature as :mod:`cpu_fallback.casa_moments`, whose docstring holds
the definitions of moments -1..11, the include/exclude rules and the CASA quirks reproduced;
arrays in and out are CuPy arrays on the current device. CuPy is imported inside the function.

One ``RawKernel`` (one thread per pixel) walks its spectrum in channel order exactly as the CPU
reference does -- the same float64 sums in the same order with the products rounded separately
(``__dmul_rn``, no fused multiply-add), the same float32 steps (``M1*M1``, the running sum of
the median coordinate, the absolute deviations) -- so the results agree with the CPU to the
last bit in practice. The median of I (moment 3) is a segmented device sort of the selected
values (blanks as +inf) and a pick by the per-pixel count, as on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from app.compute.contract import Case, Tolerance
from kernel_common.moment_plans import plan_casa
from kernel_common.rawcache import check_float32_cube, raw_kernel
from kernel_common.views import to_host

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=2e-5, atol=1e-6)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("casa_moment_maps", ("cube", "v", "w"), {"moments": (-1, 0, 1, 2, 5, 6, 7, 8, 9, 10, 11)}),)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

_THREADS = 256

_SOURCE = r"""
__device__ __forceinline__ bool visivo_keep(float x, double lo, double hi) {
    if (!isfinite(x)) return false;
#if RANGE == 1
    return (double)x >= lo && (double)x <= hi;
#elif RANGE == 2
    return (double)x <= lo || (double)x >= hi;
#else
    return true;
#endif
}

extern "C" __global__ void KERNEL_NAME(
    const float* __restrict__ cube, const double* __restrict__ v, const double* __restrict__ w,
    const int nz, const int ny, const int nx, const long long sz, const long long sy,
    const double lo, const double hi, const double width, float* __restrict__ out,
    int* __restrict__ count)
{
    const long long npix = (long long)ny * nx;
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= npix) return;
    const float* spec = cube + (p / nx) * sy + (p % nx);
    const float qnan = __int_as_float(0x7fc00000);
    double s0 = 0.0, sq = 0.0, s1 = 0.0, s2 = 0.0, sw = 0.0;
    const double dinf = __longlong_as_double(0x7ff0000000000000LL);
    double dmax = -dinf, dmin = dinf;
    int n = 0, imax = 0, imin = 0;
    for (int c = 0; c < nz; ++c) {
        const float x = spec[c * sz];
        if (!visivo_keep(x, lo, hi)) continue;
        const double dx = (double)x;
        ++n;
        s0 += dx;
        sq += __dmul_rn(dx, dx);
        const double xv = __dmul_rn(dx, v[c]);
        s1 += xv;
        s2 += __dmul_rn(xv, v[c]);
        sw += __dmul_rn(dx, w[c]);
        if (dx > dmax) { dmax = dx; imax = c; }
        if (dx < dmin) { dmin = dx; imin = c; }
    }
    count[p] = n;
    const double nn = n > 0 ? (double)n : 1.0;
    const float m1 = (float)(s1 / s0);
#if SLOT_M1 >= 0
    out[SLOT_M1 * npix + p] = n > 0 ? (float)(s0 / nn) : qnan;
#endif
#if SLOT_0 >= 0
    out[SLOT_0 * npix + p] = n > 0 ? (float)(width >= 0.0 ? s0 * width : sw) : qnan;
#endif
#if SLOT_1 >= 0
    out[SLOT_1 * npix + p] = (n > 0 && s0 != 0.0) ? m1 : qnan;
#endif
#if SLOT_2 >= 0
    {
        const float disp = fabsf((float)(s2 / s0 - (double)__fmul_rn(m1, m1)));
        out[SLOT_2 * npix + p] = (n > 0 && s0 != 0.0 && disp > 0.0f) ? sqrtf(disp) : qnan;
    }
#endif
#if SLOT_5 >= 0
    {
        const double var = (sq - s0 * s0 / nn) / (double)(n > 1 ? n - 1 : 1);
        out[SLOT_5 * npix + p] = (n > 1 && (float)var > 0.0f) ? (float)sqrt(var) : qnan;
    }
#endif
#if SLOT_6 >= 0
    out[SLOT_6 * npix + p] = n > 0 ? (float)sqrt(sq / nn) : qnan;
#endif
#if SLOT_8 >= 0
    out[SLOT_8 * npix + p] = n > 0 ? (float)dmax : qnan;
#endif
#if SLOT_9 >= 0
    out[SLOT_9 * npix + p] = n > 0 ? (float)v[imax] : qnan;
#endif
#if SLOT_10 >= 0
    out[SLOT_10 * npix + p] = n > 0 ? (float)dmin : qnan;
#endif
#if SLOT_11 >= 0
    out[SLOT_11 * npix + p] = n > 0 ? (float)v[imin] : qnan;
#endif
#if SLOT_7 >= 0
    {
        const float mean = (float)(s0 / nn);
        double dev = 0.0;
        for (int c = 0; c < nz; ++c) {
            const float x = spec[c * sz];
            if (visivo_keep(x, lo, hi)) dev += (double)fabsf(__fsub_rn(x, mean));
        }
        out[SLOT_7 * npix + p] = n > 0 ? (float)(dev / nn) : qnan;
    }
#endif
#if SLOT_4 >= 0
    {
        float run = 0.0f, top = -__int_as_float(0x7f800000);
        bool started = false;
        for (int c = 0; c < nz; ++c) {
            const float x = spec[c * sz];
            if (!visivo_keep(x, lo, hi)) continue;
            run = started ? __fadd_rn(x, fabsf(run)) : fabsf(x);
            started = true;
            top = fmaxf(top, run);
        }
        const float half = top / 2.0f;
        int first = 0;
        run = 0.0f;
        started = false;
        for (int c = 0; c < nz; ++c) {
            const float x = spec[c * sz];
            if (!visivo_keep(x, lo, hi)) continue;
            run = started ? __fadd_rn(x, fabsf(run)) : fabsf(x);
            started = true;
            if (run >= half) { first = c; break; }
        }
        out[SLOT_4 * npix + p] = n > 0 ? (float)v[first] : qnan;
    }
#endif
}
"""

_MOMENTS = (-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)


def _kernel(cp: Any, flags: tuple[tuple[str, int], ...]) -> Any:
    """The compiled kernel variant ``visivo_casa_moments`` for the current device (memoised per device)."""
    return raw_kernel("casa_moments", _SOURCE, defines=flags)



def _median(cp: Any, a: Any, lo: float, hi: float, mode: int, count: Any) -> Any:
    """casacore median of the selected values of every spectrum (float32), NaN if none."""
    nz = a.shape[0]
    x = a.reshape(nz, -1) if a.flags.c_contiguous else cp.ascontiguousarray(a).reshape(nz, -1)
    keep = cp.isfinite(x)
    if mode:  # compare in float64, as the kernel and the CPU reference do
        xd = x.astype(cp.float64)
        keep &= ((xd >= lo) & (xd <= hi)) if mode == 1 else ((xd <= lo) | (xd >= hi))
    srt = cp.sort(cp.where(keep, x, cp.float32(cp.inf)), axis=0)
    n = count.astype(cp.int64)
    n2 = cp.maximum(n - 1, 0) // 2
    first = cp.take_along_axis(srt, n2[None, :], axis=0)[0]
    second = cp.take_along_axis(srt, cp.minimum(n2 + 1, nz - 1)[None, :], axis=0)[0]
    even = (n % 2 == 0) & (n <= 100)
    med = cp.where(even, (first + second) * cp.float32(0.5), first).astype(cp.float32)
    return cp.where(n > 0, med, cp.float32(cp.nan))


def casa_moment_maps(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    moments: Iterable[int],
    include: float | Sequence[float] | None = None,
    exclude: float | Sequence[float] | None = None,
) -> dict[int, _Array]:
    """Moment maps exactly as CASA ``immoments`` computes them, on the device.

    Parameters
    ----------
    cube : cupy.ndarray
        ``(spectral, y, x)`` float32 intensities, data units; NaN/inf are blank. The x axis
        must be contiguous (y-slab views of a C-contiguous cube are fine). Not modified.
    coords : cupy.ndarray or numpy.ndarray
        ``(nz,)`` spectral coordinate of every channel in output units (CASA: km/s).
    widths : cupy.ndarray or numpy.ndarray
        ``(nz,)`` channel widths, same units; only ``|dv|`` is used (moment 0).
    moments : iterable of int
        CASA moment numbers, any subset of ``-1 .. 11``.
    include, exclude : float, sequence of float or None, optional
        immoments ``includepix`` / ``excludepix`` (data units); at most one of them.

    Returns
    -------
    dict of int to cupy.ndarray
        ``(y, x)`` float32 map per requested moment; NaN where CASA masks the pixel
        (definitions and units: :mod:`cpu_fallback.casa_moments`).

    Raises
    ------
    ValueError
        As the CPU reference, and for a cube whose x axis is not contiguous.
    TypeError
        If the cube is not float32.

    Notes
    -----
    ``coords`` and ``widths`` are read on the host (a small copy marked ``# sync`` if they are
    on the device). Moment 3 sorts a float32 copy of the cube on the device.
    """
    import cupy as cp

    a = cp.asarray(cube)
    check_float32_cube(a, "CASA moment")
    moms, v, width, w, rng, is_include = plan_casa(a, to_host(coords), to_host(widths), moments, include, exclude)
    nz, ny, nx = a.shape
    mode = 0 if rng is None else (1 if is_include else 2)
    lo, hi = rng if rng is not None else (0.0, 0.0)
    slots = [m for m in moms if m != 3]
    flags = (("RANGE", mode),) + tuple(
        (f"SLOT_{'M1' if m == -1 else m}", slots.index(m) if m in slots else -1) for m in _MOMENTS
    )
    out = cp.empty((len(slots), ny, nx), dtype=cp.float32)
    count = cp.empty((ny, nx), dtype=cp.int32)
    npix = ny * nx
    if npix:
        args = (
            a, cp.asarray(v), cp.asarray(w), np.int32(nz), np.int32(ny), np.int32(nx),
            np.int64(a.strides[0] // 4), np.int64(a.strides[1] // 4), np.float64(lo), np.float64(hi),
            np.float64(width if width is not None else -1.0), out, count,
        )  # fmt: skip
        _kernel(cp, flags)(((npix + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    res = {m: out[i] for i, m in enumerate(slots)}
    if 3 in moms:
        res[3] = _median(cp, a, lo, hi, mode, count.reshape(-1)).reshape(ny, nx)
    return {m: res[m] for m in moms}

"""Spectral moment maps on the GPU (CuPy), API-reference convention.

Same public function and signature as :mod:`cpu_fallback.moments`, whose docstring holds the
definitions (orders 0-6, 8, 10), the blanking rules and the numerics; arrays in and out are
CuPy arrays on the current device. CuPy is imported inside the function.

One fused ``RawKernel`` (one thread per pixel) reads every voxel of its spectrum once -- the
threads of a warp read neighbouring pixels of the same channel plane, so the reads coalesce --
and accumulates in float64 exactly the sums the requested orders need (``sum I dv``,
``sum I u dv``, ``sum I u^2 dv``, ``sum I^2 dv``, kept weight and count, max, min) on the same
centred coordinates ``u = v - mean(v)`` as the CPU reference, then finishes the moments per
pixel and writes float32. Orders 3-5 add a second loop over the thread's spectrum (mostly L2
hits) for the sums about the pixel's own ``M1``, as on the CPU. The kernel source is specialised
per set of orders with ``#define`` flags and compiled once per device and variant.

The cube must be float32 with a contiguous x axis (``strides[2] == 4``); y-slab views of a
C-contiguous cube are fine (the plane and row strides are kernel arguments).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from app.compute.contract import Case, Tolerance
from kernel_common.moment_plans import AxisPlan, plan_axis
from kernel_common.rawcache import check_float32_cube, raw_kernel
from kernel_common.views import to_host

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=2e-5, atol=1e-6)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("moment_maps", ("cube", "v", "w"), {"orders": (0, 1, 2, 3, 4, 5, 6, 8, 10), "threshold": 0.1}),)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

_THREADS = 256

_SOURCE = r"""
extern "C" __global__ void KERNEL_NAME(
    const float* __restrict__ cube, const double* __restrict__ u, const double* __restrict__ w,
    const int nz, const int ny, const int nx, const long long sz, const long long sy,
    const double thr, const double ref, const double var_floor, float* __restrict__ out)
{
    const long long npix = (long long)ny * nx;
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= npix) return;
    const float* spec = cube + (p / nx) * sy + (p % nx);
    const float qnan = __int_as_float(0x7fc00000);
    const float finf = __int_as_float(0x7f800000);
    double s0 = 0.0;
#if NEED_S1
    double s1 = 0.0;
#endif
#if NEED_S2
    double s2 = 0.0;
#endif
#if NEED_SQ
    double sq = 0.0, kw = 0.0;
#endif
    float mx = -finf, mn = finf;
    int nk = 0;
    for (int c = 0; c < nz; ++c) {
        const float x = spec[c * sz];
        if (!isfinite(x)) continue;
#if HAS_THR
        if ((double)x < thr) continue;
#endif
        ++nk;
        const double wx = __dmul_rn(w[c], (double)x);
        s0 += wx;
#if NEED_S1
        const double wxu = __dmul_rn(wx, u[c]);
        s1 += wxu;
#endif
#if NEED_S2
        s2 += __dmul_rn(wxu, u[c]);
#endif
#if NEED_SQ
        sq += __dmul_rn(wx, (double)x);
        kw += w[c];
#endif
#if NEED_MAX
        mx = fmaxf(mx, x);
#endif
#if NEED_MIN
        mn = fminf(mn, x);
#endif
    }
    const bool none = (nk == 0);
    const bool good = !none && isfinite(s0) && s0 != 0.0;
#if NEED_S1
    const double m1u = s1 / s0;
#endif
#if SLOT_0 >= 0
    out[SLOT_0 * npix + p] = none ? qnan : (float)s0;
#endif
#if SLOT_1 >= 0
    out[SLOT_1 * npix + p] = good ? (float)(m1u + ref) : qnan;
#endif
#if SLOT_2 >= 0
    {
        double var = s2 / s0 - __dmul_rn(m1u, m1u);
        if (fabs(var) <= var_floor) var = 0.0;
        out[SLOT_2 * npix + p] = good ? (float)var : qnan;
    }
#endif
#if NEED_CEN
    {
        const double m1c = isfinite(m1u) ? m1u : 0.0;
        double c2 = 0.0, c3 = 0.0, c4 = 0.0, c5 = 0.0;
        for (int c = 0; c < nz; ++c) {
            const float x = spec[c * sz];
            if (!isfinite(x)) continue;
#if HAS_THR
            if ((double)x < thr) continue;
#endif
            const double d = u[c] - m1c;
            double t = __dmul_rn(__dmul_rn((double)x, w[c]), d);
            t = __dmul_rn(t, d); c2 += t;
            t = __dmul_rn(t, d); c3 += t;
            t = __dmul_rn(t, d); c4 += t;
            t = __dmul_rn(t, d); c5 += t;
        }
        const double mu2 = c2 / s0;
        const double sig = sqrt(mu2);
        const bool ok = good && mu2 > var_floor;
#if SLOT_3 >= 0
        out[SLOT_3 * npix + p] = ok ? (float)(c3 / s0 / pow(sig, 3.0)) : qnan;
#endif
#if SLOT_4 >= 0
        out[SLOT_4 * npix + p] = ok ? (float)(c4 / s0 / pow(sig, 4.0) - 3.0) : qnan;
#endif
#if SLOT_5 >= 0
        out[SLOT_5 * npix + p] = ok ? (float)(c5 / s0 / pow(sig, 5.0)) : qnan;
#endif
    }
#endif
#if SLOT_6 >= 0
    out[SLOT_6 * npix + p] = none ? qnan : (float)sqrt(sq / kw);
#endif
#if SLOT_8 >= 0
    out[SLOT_8 * npix + p] = none ? qnan : mx;
#endif
#if SLOT_10 >= 0
    out[SLOT_10 * npix + p] = none ? qnan : mn;
#endif
}
"""


def _flags(p: AxisPlan) -> tuple[tuple[str, int], ...]:
    """``#define`` values selecting the sums and output slots of a kernel variant."""
    o = set(p.orders)
    flags = {
        "HAS_THR": int(p.threshold is not None),
        "NEED_S1": int(bool(o & {1, 2, 3, 4, 5})),
        "NEED_S2": int(2 in o),
        "NEED_SQ": int(6 in o),
        "NEED_MAX": int(8 in o),
        "NEED_MIN": int(10 in o),
        "NEED_CEN": int(bool(o & {3, 4, 5})),
    }
    for k in (0, 1, 2, 3, 4, 5, 6, 8, 10):
        flags[f"SLOT_{k}"] = p.orders.index(k) if k in o else -1
    return tuple(flags.items())


def _kernel(cp: Any, flags: tuple[tuple[str, int], ...]) -> Any:
    """The compiled kernel variant ``visivo_moments`` for the current device (memoised per device)."""
    return raw_kernel("moments", _SOURCE, defines=flags)



def moment_maps(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    orders: Iterable[int],
    threshold: float | None = None,
) -> dict[int, _Array]:
    """Moment maps of a ``(spectral, y, x)`` cube on the device (API-reference convention).

    Parameters
    ----------
    cube : cupy.ndarray
        ``(nz, ny, nx)`` float32 intensities, data units; NaN/inf are blank. The x axis must be
        contiguous (a y-slab view of a C-contiguous cube is fine). Not modified.
    coords : cupy.ndarray or numpy.ndarray
        ``(nz,)`` spectral coordinate of each channel in output units (e.g. km/s).
    widths : cupy.ndarray or numpy.ndarray
        ``(nz,)`` integration weights ``dv >= 0`` (same units).
    orders : iterable of int
        Any subset of ``{0, 1, 2, 3, 4, 5, 6, 8, 10}``.
    threshold : float, optional
        If given, only voxels with ``I >= threshold`` are kept (data units).

    Returns
    -------
    dict of int to cupy.ndarray
        ``(ny, nx)`` float32 map per requested order (formulas: :mod:`cpu_fallback.moments`).

    Raises
    ------
    ValueError
        Bad shapes, strides or arguments (as the CPU reference).
    TypeError
        If the cube is not float32.

    Notes
    -----
    ``coords`` and ``widths`` are read on the host (a small device-to-host copy if they are on
    the device, marked ``# sync``); the kernel launch itself does not synchronise.
    """
    import cupy as cp

    a = cp.asarray(cube)
    check_float32_cube(a, "moment")
    nz, ny, nx = a.shape
    p = plan_axis(nz, to_host(coords), to_host(widths), orders, threshold)
    out = cp.empty((len(p.orders), ny, nx), dtype=cp.float32)
    npix = ny * nx
    if npix:
        kern = _kernel(cp, _flags(p))
        u, w = cp.asarray(p.u), cp.asarray(p.w)  # small host -> device copies
        args = (
            a, u, w, np.int32(nz), np.int32(ny), np.int32(nx),
            np.int64(a.strides[0] // 4), np.int64(a.strides[1] // 4),
            np.float64(p.threshold if p.threshold is not None else 0.0),
            np.float64(p.ref), np.float64(p.var_floor), out,
        )  # fmt: skip
        kern(((npix + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    return {k: out[i] for i, k in enumerate(p.orders)}

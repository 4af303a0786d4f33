"""Per-pixel line widths on the GPU: Gaussian FWHM by Levenberg-Marquardt in one kernel, and EW.

Same public functions and signatures as :mod:`cpu_fallback.linewidth`, whose module notes define
the maps, the blanking rules and the fit; arrays in and out are CuPy arrays on the current
device. CuPy is imported inside the functions.

One thread per spatial pixel runs the whole fit in registers (``visivo_linewidth_lm``): it
reads its spectrum (coalesced: neighbouring threads read neighbouring pixels of one channel)
once for ``M0`` and the peak, once for the moment start, then once per Levenberg-Marquardt step, and
follows the CPU reference step for step -- same start, same damping schedule, same explicit
3x3 Cholesky solve and stopping rules, float64 throughout. Only the robust noise (a row sort,
as in :mod:`gpu_kernels.noise`) runs as CuPy array code before the launch.
"""

from __future__ import annotations

import functools
from typing import Any

_Array = Any

FWHM_PER_SIGMA = 2.3548200450309493
MAD_TO_SIGMA = 1.4826
_MIN_SAMPLES = 4
_THREADS = 128

_SOURCE = r"""
#define FWHM_PER_SIGMA 2.3548200450309493
#define LAMBDA0 1e-3
#define LAMBDA_MAX 1e12
#define FTOL 1e-12
#define XTOL 1e-9
#define VISIVO_INF __longlong_as_double(0x7ff0000000000000LL)
#define VISIVO_NANF __int_as_float(0x7fc00000)

struct Sums { double chi2, h0, h1, h2, h3, h4, h5, b0, b1, b2; };

__device__ __forceinline__ bool visivo_used(DATA_T v, int use_thr, double thr) {
    return isfinite((double)v) && (!use_thr || (double)v >= thr);
}

/* chi^2, J^T J and J^T r of A exp(-z^2/2), z = (u - mu)/sig, on unit-peak data (cpu _block_sums). */
__device__ Sums visivo_lw_sums(const DATA_T* __restrict__ col, long long npix, int nz,
                               const double* __restrict__ u, int use_thr, double thr,
                               double inv_peak, double a, double mu, double sig) {
    double chi2 = 0, t0 = 0, t1 = 0, t2 = 0, s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0;
    double inv_s = 1.0 / sig;
    for (int c = 0; c < nz; ++c) {
        DATA_T v = col[(long long)c * npix];
        if (!visivo_used(v, use_thr, thr)) continue;
        double y = (double)v * inv_peak;
        double z = (u[c] - mu) * inv_s;
        double z2 = z * z;
        double g = exp(z2 * -0.5);
        double r = y - g * a;
        chi2 += r * r;
        double gr = r * g;
        t0 += gr; t1 += gr * z; t2 += gr * z2;
        double q = g * g;
        s0 += q; s1 += q * z; s2 += q * z2;
        double qz2 = q * z2;
        s3 += qz2 * z; s4 += qz2 * z2;
    }
    double k = a / sig;
    Sums s = {chi2, s0, k * s1, k * s2, k * k * s2, k * k * s3, k * k * s4, t0, k * t1, k * t2};
    return s;
}

/* (H + lam diag H) d = b by 3x3 Cholesky (cpu _solve); false where not positive definite. */
__device__ bool visivo_lw_solve(const Sums& s, double lam, double* d) {
    double m00 = s.h0 * (1 + lam), m11 = s.h3 * (1 + lam), m22 = s.h5 * (1 + lam);
    double l00 = sqrt(m00);
    double l10 = s.h1 / l00, l20 = s.h2 / l00;
    double d11 = m11 - l10 * l10;
    double l11 = sqrt(d11);
    double l21 = (s.h4 - l20 * l10) / l11;
    double d22 = m22 - l20 * l20 - l21 * l21;
    double l22 = sqrt(d22);
    double y0 = s.b0 / l00;
    double y1 = (s.b1 - l10 * y0) / l11;
    double y2 = (s.b2 - l20 * y0 - l21 * y1) / l22;
    d[2] = y2 / l22;
    d[1] = (y1 - l21 * d[2]) / l11;
    d[0] = (y0 - l10 * d[1] - l20 * d[2]) / l00;
    return m00 > 0 && d11 > 0 && d22 > 0 && isfinite(d[0]) && isfinite(d[1]) && isfinite(d[2]);
}

extern "C" __global__ void KERNEL_NAME(
        const DATA_T* __restrict__ cube, const double* __restrict__ u, const double* __restrict__ dv,
        const double* __restrict__ noise, const long long npix, const int nz, const int use_thr,
        const double thr, const double snr_cut, const double half, const int max_iter,
        const int do_fit, float* __restrict__ fwhm, float* __restrict__ ew) {
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= npix) return;
    const DATA_T* col = cube + p;
    double m0 = 0, peak = -VISIVO_INF, umin = VISIVO_INF, umax = -VISIVO_INF;
    int n = 0;
    for (int c = 0; c < nz; ++c) {
        umin = fmin(umin, u[c]); umax = fmax(umax, u[c]);
        DATA_T v = col[(long long)c * npix];
        if (!visivo_used(v, use_thr, thr)) continue;
        ++n; m0 += (double)v * dv[c]; peak = fmax(peak, (double)v);
    }
    bool ok = n > 0 && m0 > 0 && peak > 0 && (snr_cut <= 0 || peak >= snr_cut * noise[p]);
    ew[p] = ok ? (float)(m0 / peak) : VISIVO_NANF;
    fwhm[p] = VISIVO_NANF;
    if (!ok || !do_fit || n < MIN_SAMPLES) return;
    /* moment start from the used channels above half the peak (cpu _start) */
    double inv_peak = 1.0 / peak, hw = 0, hu = 0, wid = 0;
    for (int c = 0; c < nz; ++c) {
        DATA_T v = col[(long long)c * npix];
        if (!visivo_used(v, use_thr, thr)) continue;
        double y = (double)v * inv_peak, dvu = dv[c] / half;
        if (y > 0.5) { hw += y * dvu; hu += y * (u[c] * dvu); wid += dvu; }
    }
    double p0 = 1.0, p1 = hu / hw, p2 = wid / FWHM_PER_SIGMA, lam = LAMBDA0, d[3];
    Sums s = visivo_lw_sums(col, npix, nz, u, use_thr, thr, inv_peak, p0, p1, p2);
    bool conv = false;
    for (int it = 0; it < max_iter; ++it) {
        bool sok = visivo_lw_solve(s, lam, d);
        if (sok && lam < 1.0 && fabs(d[0]) <= XTOL * fabs(p0) && fabs(d[1]) <= XTOL * fabs(p2)
                && fabs(d[2]) <= XTOL * fabs(p2)) { conv = true; break; }
        double q0 = sok ? p0 + d[0] : p0, q1 = sok ? p1 + d[1] : p1, q2 = sok ? p2 + d[2] : p2;
        sok = sok && q2 != 0;
        bool acc = false;
        Sums t;
        if (sok) {
            t = visivo_lw_sums(col, npix, nz, u, use_thr, thr, inv_peak, q0, q1, q2);
            acc = t.chi2 < s.chi2;
        }
        lam = acc ? fmax(lam / 10, 1e-12) : lam * 10;
        bool fin = (acc && s.chi2 - t.chi2 <= FTOL * s.chi2) || lam > LAMBDA_MAX;
        if (acc) { p0 = q0; p1 = q1; p2 = q2; s = t; }
        if (fin) { conv = true; break; }
    }
    double sig = fabs(p2);
    if (conv && isfinite(p0) && p0 > 0 && p1 >= umin && p1 <= umax && sig > 0 && sig <= umax - umin)
        fwhm[p] = (float)(FWHM_PER_SIGMA * sig * half);
}
"""


@functools.cache
def _kernel(data_t: str) -> Any:
    """Compiled ``visivo_linewidth_lm_<type>`` (memoised; CuPy caches per device)."""
    import cupy as cp

    name = f"visivo_linewidth_lm_{data_t}"
    code = f"#define DATA_T {data_t}\n#define MIN_SAMPLES {_MIN_SAMPLES}\n" + _SOURCE.replace("KERNEL_NAME", name)
    return cp.RawModule(code=code).get_function(name)


def equivalent_width(cube: _Array, widths: _Array, *, snr_cut: float = 0.0, threshold: float | None = None) -> _Array:
    """Equivalent-width map ``sum(I dv) / max(I)`` on the device; see the CPU twin.

    Returns
    -------
    cupy.ndarray
        ``(ny, nx)`` float32 EW in the unit of ``widths``; NaN for blank pixels.
    """
    return _run(cube, None, widths, snr_cut, threshold, 0, fit=False)[1]


def gaussian_linewidth(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    snr_cut: float = 3.0,
    threshold: float | None = None,
    max_iter: int = 100,
) -> tuple[_Array, _Array]:
    """Gaussian FWHM and equivalent-width maps on the device; see the CPU twin.

    Returns
    -------
    fwhm, ew : cupy.ndarray
        ``(ny, nx)`` float32 maps (``2.3548 sigma`` in the unit of ``coords``;
        ``sum(I dv) / max(I)`` in the unit of ``widths``); NaN where blank or failed.
    """
    return _run(cube, coords, widths, snr_cut, threshold, max_iter, fit=True)


def _run(cube, coords, widths, snr_cut, threshold, max_iter, *, fit: bool):
    import cupy as cp
    import numpy as np

    a = cp.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    nz, ny, nx = a.shape
    npix = ny * nx
    dv_host = np.asarray(cp.asnumpy(widths), dtype=np.float64)  # sync (nz values)
    if dv_host.shape != (nz,):
        raise ValueError(f"widths must have shape ({nz},), got {dv_host.shape}")
    x = np.asarray(cp.asnumpy(coords), dtype=np.float64) if coords is not None else np.zeros(nz)  # sync
    if x.shape != (nz,):
        raise ValueError(f"coords must have shape ({nz},), got {x.shape}")
    lo, hi = (float(x.min()), float(x.max())) if nz else (0.0, 0.0)
    half = 0.5 * (hi - lo) if hi > lo else 1.0
    u = cp.asarray((x - 0.5 * (hi + lo)) / half)
    data_t = "float" if a.dtype == cp.float32 else "double"
    flat = cp.ascontiguousarray(a.reshape(nz, npix), dtype=cp.float32 if data_t == "float" else cp.float64)
    fwhm = cp.empty(npix, dtype=cp.float32)
    ew = cp.empty(npix, dtype=cp.float32)
    if npix == 0 or nz == 0:
        return cp.full((ny, nx), cp.nan, cp.float32), cp.full((ny, nx), cp.nan, cp.float32)
    noise = _noise(flat) if snr_cut > 0 else cp.zeros(npix)
    args = (
        flat, u, cp.asarray(dv_host), noise, np.int64(npix), np.int32(nz),
        np.int32(threshold is not None), np.float64(0.0 if threshold is None else threshold),
        np.float64(snr_cut), np.float64(half), np.int32(max_iter), np.int32(fit), fwhm, ew,
    )  # fmt: skip
    _check_contiguous(args)
    _kernel(data_t)(((npix + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    return fwhm.reshape(ny, nx), ew.reshape(ny, nx)


def _check_contiguous(args: tuple) -> None:
    """Raw kernels ignore strides: every array argument must be C-contiguous."""
    for i, arg in enumerate(args):
        flags = getattr(arg, "flags", None)
        if flags is not None and getattr(arg, "ndim", 0) > 0 and not flags.c_contiguous:
            raise ValueError(f"kernel argument {i} is not C-contiguous")


def _noise(flat: Any) -> Any:
    """``1.4826 * MAD`` of the finite samples of each spectrum (columns of ``flat``), float64."""
    import cupy as cp

    y = flat.T.astype(cp.float64)
    fin = cp.isfinite(y)
    n = fin.sum(axis=1)
    lo, hi = ((cp.maximum(n, 1) - 1) // 2)[:, None], (n // 2)[:, None]
    s = cp.sort(cp.where(fin, y, cp.inf), axis=1)
    med = 0.5 * (cp.take_along_axis(s, lo, 1) + cp.take_along_axis(s, hi, 1))
    med = cp.where(n[:, None] > 0, med, 0.0)
    cols = cp.arange(y.shape[1])[None, :]
    d = cp.sort(cp.where(cols < n[:, None], cp.abs(s - med), cp.inf), axis=1)
    mad = 0.5 * (cp.take_along_axis(d, lo, 1) + cp.take_along_axis(d, hi, 1))[:, 0]
    return cp.ascontiguousarray(MAD_TO_SIGMA * cp.where(n > 0, mad, cp.nan))

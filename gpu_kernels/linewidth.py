"""Per-pixel line widths on the GPU: Gaussian FWHM by Levenberg-Marquardt in one kernel, and EW.

Same public functions and signatures as :mod:`cpu_fallback.linewidth`, whose module notes define
the maps, the blanking rules and the fit (start, window, steps, stopping rules); arrays in and
out are CuPy arrays on the current device. CuPy is imported inside the functions.

One thread per spatial pixel runs the whole fit in registers (``visivo_linewidth_lm``): it reads
its spectrum once in ascending-axis order (through the channel permutation; coalesced:
neighbouring threads read neighbouring pixels of one channel) for ``M0``, the peak and its
channel, walks out from the peak for the half-power run and crossings, then reads only its fit
window per Levenberg-Marquardt evaluation, and follows the CPU reference step for step -- same
start, window rule, sums (each in channel order, unused samples skipped where the CPU adds
exact zeros), Newton / Gauss-Newton step, damping schedule, stopping rules and re-windowing,
float64 throughout, compiled without FMA contraction so that the arithmetic matches NumPy's
(only ``exp`` may differ in the last bit). Only the robust noise (a row sort,
:mod:`kernel_common.robust`) runs as CuPy array code before the launch; after it, the kernel's
fitted parameters go through the acceptance rule :func:`kernel_common.linefit.significant` --
the same array code the CPU tree runs, here with CuPy.
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.constants import FWHM_PER_SIGMA as FWHM_PER_SIGMA
from kernel_common.constants import MAD_TO_SIGMA
from kernel_common.linefit import SpectralAxis, check_columns, fit_defines, significant
from kernel_common.rawcache import raw_kernel
from kernel_common.robust import row_median_mad

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-5)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("gaussian_linewidth", ("cube", "v", "w"), {"snr_cut": 3.0}),
    Case("equivalent_width", ("cube", "w"), {"snr_cut": 3.0, "threshold": 0.1}),
)

_Array = Any

_THREADS = 128

_SOURCE = r"""
#define VISIVO_NANF __int_as_float(0x7fc00000)

struct LwSums { double chi2, t0, t1, t2, t3, t4, s0, s1, s2, s3, s4; };

struct LwPix {
    const DATA_T* __restrict__ col;  /* this pixel's spectrum, stride npix, original channel order */
    long long npix;
    const int* __restrict__ perm;    /* sorted channel -> original channel */
    int use_thr;
    double thr;
};

__device__ __forceinline__ DATA_T lw_at(const LwPix& px, int k) {
    return px.col[(long long)px.perm[k] * px.npix];
}

__device__ __forceinline__ bool lw_used(const LwPix& px, DATA_T v) {
    return isfinite((double)v) && (!px.use_thr || (double)v >= px.thr);
}

/* first k with u[k] >= x, and first k with u[k] > x (numpy searchsorted left / right) */
__device__ int lw_lower(const double* u, int n, double x) {
    int lo = 0, hi = n;
    while (lo < hi) { int mid = (lo + hi) >> 1; if (u[mid] < x) lo = mid + 1; else hi = mid; }
    return lo;
}
__device__ int lw_upper(const double* u, int n, double x) {
    int lo = 0, hi = n;
    while (lo < hi) { int mid = (lo + hi) >> 1; if (u[mid] <= x) lo = mid + 1; else hi = mid; }
    return lo;
}

/* fit window [lo, hi) (cpu _window) */
__device__ void lw_window(const double* u, int nz, double centre, double halfw, int run_lo, int run_hi,
                          int* plo, int* phi) {
    int lo = min(lw_lower(u, nz, centre - halfw), run_lo);
    int hi = max(lw_upper(u, nz, centre + halfw), run_hi);
    hi = max(hi, lo);
    int w = hi - lo;
    int wb = min(nz, max(WIN_STEP, ((w + WIN_STEP - 1) / WIN_STEP) * WIN_STEP));
    lo = min(max(lo - (wb - w) / 2, 0), nz - wb);
    *plo = lo;
    *phi = lo + wb;
}

__device__ int lw_count(const LwPix& px, int lo, int hi) {
    int n = 0;
    for (int k = lo; k < hi; ++k) n += lw_used(px, lw_at(px, k)) ? 1 : 0;
    return n;
}

/* end of the half-power run on one side (step -1 / +1) and the interpolated crossing (cpu _half_run) */
__device__ double lw_cross(const LwPix& px, const double* u, const double* du, int nz, int kp, DATA_T peak,
                           DATA_T half, double inv, int step, int* pend) {
    int a_k = kp, c_k = kp;
    DATA_T a_v = peak, c_v = 0;
    bool pending = false, found = false;
    for (int k = kp + step; k >= 0 && k < nz; k += step) {
        DATA_T v = lw_at(px, k);
        if (!lw_used(px, v)) continue;
        if (!(v > half)) {
            if (pending) { found = true; break; }
            pending = true; c_k = k; c_v = v;
        } else {
            pending = false; a_k = k; a_v = v;
        }
    }
    if (found || pending) {  /* a second sample at or below half, or the band edge after one */
        *pend = c_k;
        double ya = (double)a_v * inv, ye = (double)c_v * inv;
        return u[c_k] + (u[a_k] - u[c_k]) * ((0.5 - ye) / (ya - ye));
    }
    *pend = step < 0 ? -1 : nz;
    return step < 0 ? u[0] - 0.5 * du[0] : u[nz - 1] + 0.5 * du[nz - 1];
}

/* chi^2, T_k = sum g r z^k, S_k = sum g^2 z^k over the window's used samples, in channel order (cpu _sums) */
__device__ LwSums lw_sums(const LwPix& px, const double* __restrict__ u, int lo, int hi, double inv,
                          double a, double mu, double sig) {
    LwSums s = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    double inv_s = 1.0 / sig;
    for (int k = lo; k < hi; ++k) {
        DATA_T v = lw_at(px, k);
        if (!lw_used(px, v)) continue;
        double y = (double)v * inv;
        double z = (u[k] - mu) * inv_s;
        double z2 = z * z;
        double g = exp(z2 * -0.5);
        double r = y - g * a;
        s.chi2 += r * r;
        double gr = r * g;
        s.t0 += gr;
        s.t1 += gr * z;
        s.t2 += gr * z2;
        double t = gr * z2 * z;
        s.t3 += t;
        s.t4 += t * z;
        double q = g * g;
        s.s0 += q;
        s.s1 += q * z;
        double qz2 = q * z2;
        s.s2 += qz2;
        s.s3 += qz2 * z;
        s.s4 += qz2 * z2;
    }
    return s;
}

/* Hessian of chi^2/2 (h), J^T J (jj), J^T r (b) at (a, mu, sig) from the sums (cpu _normal) */
__device__ void lw_normal(const LwSums& s, double a, double sig, double* h, double* jj, double* b) {
    double c = a / sig, q = a / (sig * sig);
    jj[0] = s.s0; jj[1] = c * s.s1; jj[2] = c * s.s2;
    jj[3] = c * c * s.s2; jj[4] = c * c * s.s3; jj[5] = c * c * s.s4;
    h[0] = s.s0; h[1] = jj[1] - s.t1 / sig; h[2] = jj[2] - s.t2 / sig;
    h[3] = jj[3] - q * (s.t2 - s.t0); h[4] = jj[4] - q * (s.t3 - 2.0 * s.t1); h[5] = jj[5] - q * (s.t4 - 3.0 * s.t2);
    b[0] = s.t0; b[1] = c * s.t1; b[2] = c * s.t2;
}

/* (H + lam diag(e)) d = b by 3x3 Cholesky (cpu _solve); false where not positive definite */
__device__ bool lw_solve(const double* h, const double* e, const double* b, double lam, double* d) {
    double m00 = h[0] + lam * e[0], m11 = h[3] + lam * e[1], m22 = h[5] + lam * e[2];
    double l00 = sqrt(m00);
    double l10 = h[1] / l00, l20 = h[2] / l00;
    double d11 = m11 - l10 * l10;
    double l11 = sqrt(d11);
    double l21 = (h[4] - l20 * l10) / l11;
    double d22 = m22 - l20 * l20 - l21 * l21;
    double l22 = sqrt(d22);
    double y0 = b[0] / l00;
    double y1 = (b[1] - l10 * y0) / l11;
    double y2 = (b[2] - l20 * y0 - l21 * y1) / l22;
    d[2] = y2 / l22;
    d[1] = (y1 - l21 * d[2]) / l11;
    d[0] = (y0 - l10 * d[1] - l20 * d[2]) / l00;
    return m00 > 0 && d11 > 0 && d22 > 0 && isfinite(d[0]) && isfinite(d[1]) && isfinite(d[2]);
}

extern "C" __global__ void KERNEL_NAME(
        const DATA_T* __restrict__ cube, const int* __restrict__ perm, const double* __restrict__ u,
        const double* __restrict__ du, const double* __restrict__ udu, const double* __restrict__ dv,
        const double* __restrict__ noise, const long long npix, const int nz, const int use_thr,
        const double thr, const double snr_cut, const int uniform, const double half_span,
        const double sig_min, const double span, const int max_iter, const int do_fit,
        float* __restrict__ fwhm, float* __restrict__ ew, double* __restrict__ par) {
    long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= npix) return;
    LwPix px = {cube + p, npix, perm, use_thr, thr};
    /* peak (first channel of it) and M0 over the used samples, in channel order (cpu _scan) */
    DATA_T peak = 0;
    int kp = 0;
    double m0 = 0;
    for (int k = 0; k < nz; ++k) {
        DATA_T v = lw_at(px, k);
        DATA_T y = lw_used(px, v) ? v : (DATA_T)0;
        if (k == 0 || y > peak) { peak = y; kp = k; }
        m0 += uniform ? (double)y : (double)y * dv[k];
    }
    if (uniform) m0 = dv[0] * m0;
    bool ok = m0 > 0 && peak > 0 && (snr_cut <= 0 || (double)peak >= snr_cut * noise[p]);
    ew[p] = ok ? (float)(m0 / (double)peak) : VISIVO_NANF;
    fwhm[p] = VISIVO_NANF;
    if (!ok || !do_fit) return;
    /* start: half-power crossings, window, moment mean over the run */
    double inv = 1.0 / (double)peak;
    DATA_T half = (DATA_T)0.5 * peak;
    int lft, rgt;
    double xl = lw_cross(px, u, du, nz, kp, peak, half, inv, -1, &lft);
    double xr = lw_cross(px, u, du, nz, kp, peak, half, inv, 1, &rgt);
    double sig0 = (xr - xl) / FWHM_PER_SIGMA;
    int lo, hi;
    lw_window(u, nz, 0.5 * (xl + xr), WIN_SIGMA * sig0, lft + 1, rgt, &lo, &hi);
    int count = lw_count(px, lo, hi);
    if (count < MIN_SAMPLES) return;
    double num = 0, den = 0;
    for (int k = lft + 1; k < rgt; ++k) {
        DATA_T v = lw_at(px, k);
        if (!lw_used(px, v)) continue;
        double y = (double)v * inv;
        num += y * udu[k];
        den += y * du[k];
    }
    double p0 = 1.0, p1 = num / den, p2 = sig0;
    double q0 = 0, q1 = 0, q2 = 0, o0 = 0, o1 = 0, o2 = 0;
    int rounds = 0;
    for (;;) {
        /* one Levenberg-Marquardt fit in the window [lo, hi) (cpu _lm) */
        double dof = (double)max(count - 3, 1);
        LwSums s = lw_sums(px, u, lo, hi, inv, p0, p1, p2);
        double lam = LAMBDA0, nu = 2.0;
        int it = 0, state = 0;
        while (state == 0) {
            double h[6], jj[6], b[3], e[3], d[3];
            lw_normal(s, p0, p2, h, jj, b);
            e[0] = jj[0]; e[1] = jj[3]; e[2] = jj[5];
            bool sok = lw_solve(h, e, b, lam, d);  /* Newton step; Gauss-Newton where not definite */
            if (!sok) sok = lw_solve(jj, e, b, lam, d);
            double pred = b[0] * d[0] + b[1] * d[1] + b[2] * d[2]
                          + lam * (e[0] * d[0] * d[0] + e[1] * d[1] * d[1] + e[2] * d[2] * d[2]);
            double tol = STAT_TOL * s.chi2 / dof;
            double sg = fabs(p2);
            bool tiny = fabs(d[0]) <= XTOL * fabs(p0) && fabs(d[1]) <= XTOL * sg && fabs(d[2]) <= XTOL * sg;
            if (sok && lam < 1.0 && (pred <= tol || tiny)) {
                q0 = p0 + d[0]; q1 = p1 + d[1]; q2 = p2 + d[2];
                state = 1;
                break;
            }
            double n0 = sok ? p0 + d[0] : p0, n1 = sok ? p1 + d[1] : p1, n2 = sok ? p2 + d[2] : p2;
            sok = sok && n2 != 0;
            LwSums sn = s;
            if (sok) sn = lw_sums(px, u, lo, hi, inv, n0, n1, n2);
            bool acc = sok && sn.chi2 < s.chi2;
            double t = 2.0 * ((s.chi2 - sn.chi2) / pred) - 1.0;
            double shrink = fmax(1.0 / 3.0, 1.0 - t * t * t);
            bool done = (acc && s.chi2 - sn.chi2 <= fmax(FTOL * s.chi2, tol)) || (!acc && lam * nu > LAMBDA_MAX);
            lam = acc ? fmax(lam * shrink, LAMBDA_MIN) : lam * nu;
            nu = acc ? 2.0 : 2.0 * nu;
            o0 = p0; o1 = p1; o2 = p2;
            if (acc) { p0 = n0; p1 = n1; p2 = n2; s = sn; }
            it += 1;
            sg = fabs(p2);
            /* a step out of the physical region ends the fit as failed: no line, or unresolved;
               one that takes the centre out of the window starts it again in a new window */
            bool bad = acc && (p0 <= 0 || sg < sig_min || sg > span);
            bool away = acc && !bad && (p1 < u[lo] || p1 > u[hi - 1]);
            if (done && !bad && !away) { q0 = p0; q1 = p1; q2 = p2; state = 1; }
            else if (away) { q0 = p0; q1 = p1; q2 = p2; state = 3; }
            else if (bad || it >= max_iter) state = 2;
        }
        if (state == 2) return;
        double sg = fabs(q2);
        if (state == 3) {  /* widen the window to take in the new centre; go on from the last point in it (cpu _lm) */
            if (!(rounds < MAX_ROUNDS - 1 && q1 >= u[0] && q1 <= u[nz - 1])) return;
            lw_window(u, nz, q1, WIN_SIGMA * sg, lo, hi, &lo, &hi);
            p0 = o0; p1 = o1; p2 = fabs(o2);
        } else {  /* a window short of mu +- COVER_SIGMA sigma away from the band edge: fit again (cpu _finish) */
            bool phys = q0 > 0 && sg >= sig_min && sg <= span && q1 >= u[0] && q1 <= u[nz - 1];
            bool short_lo = lo > 0 && u[lo - 1] >= q1 - COVER_SIGMA * sg;
            bool short_hi = hi < nz && u[hi] <= q1 + COVER_SIGMA * sg;
            if (!(rounds < MAX_ROUNDS - 1 && phys && (short_lo || short_hi))) break;
            lw_window(u, nz, q1, WIN_SIGMA * sg, nz, 0, &lo, &hi);
            p0 = q0; p1 = q1; p2 = sg;
        }
        rounds += 1;
        count = lw_count(px, lo, hi);
        if (count < MIN_SAMPLES) return;
    }
    double sg = fabs(q2);
    if (isfinite(q0) && q0 > 0 && q1 >= u[0] && q1 <= u[nz - 1] && sg >= sig_min && sg <= span) {
        fwhm[p] = (float)(FWHM_PER_SIGMA * half_span * sg);
        /* the fit for the shared significance rule (kernel_common.linefit.significant) */
        par[p] = q0; par[npix + p] = q1; par[2 * npix + p] = sg; par[3 * npix + p] = inv;
    }
}
"""


def _kernel(data_t: str) -> Any:
    """Compiled ``visivo_linewidth_lm_<type>`` for the current device (memoised per device).

    The fit constants of :mod:`kernel_common.linefit` become ``#define`` lines; no FMA
    contraction, so the arithmetic matches NumPy's.
    """
    return raw_kernel(f"linewidth_lm_{data_t}", _SOURCE, defines=(("DATA_T", data_t), *fit_defines()),
                      options=("--fmad=false",))


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
    x = np.asarray(cp.asnumpy(coords), dtype=np.float64) if coords is not None else None  # sync
    if x is not None and x.shape != (nz,):
        raise ValueError(f"coords must have shape ({nz},), got {x.shape}")
    if npix == 0 or nz == 0:
        return cp.full((ny, nx), cp.nan, cp.float32), cp.full((ny, nx), cp.nan, cp.float32)
    axis = SpectralAxis(x, dv_host)  # the same sorted axis as the CPU reference, on the host
    data_t = "float" if a.dtype == cp.float32 else "double"
    flat = cp.ascontiguousarray(a.reshape(nz, npix), dtype=cp.float32 if data_t == "float" else cp.float64)
    fwhm = cp.empty(npix, dtype=cp.float32)
    ew = cp.empty(npix, dtype=cp.float32)
    noise = _noise(flat) if snr_cut > 0 else cp.zeros(npix)
    par = cp.full((4, npix), cp.nan)  # A / peak, mu, |sigma| (scaled axis), 1 / peak of each fit
    args = (
        flat, cp.asarray(axis.perm.astype(np.int32)), cp.asarray(axis.u), cp.asarray(axis.du),
        cp.asarray(axis.udu), cp.asarray(axis.dv), noise, np.int64(npix), np.int32(nz),
        np.int32(threshold is not None), np.float64(0.0 if threshold is None else threshold),
        np.float64(snr_cut), np.int32(axis.uniform), np.float64(axis.half), np.float64(axis.sig_min),
        np.float64(axis.span), np.int32(max_iter), np.int32(fit), fwhm, ew, par,
    )  # fmt: skip
    _check_contiguous(args)
    _kernel(data_t)(((npix + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    if fit:  # the shared acceptance rule, as array code over column chunks (no host sync)
        step = check_columns(nz)
        for j0 in range(0, npix, step):
            s = slice(j0, j0 + step)
            ok = significant(flat[:, s], par[:, s], axis, threshold, cp)
            fwhm[s] = cp.where(ok, fwhm[s], cp.float32(cp.nan))
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

    mad = row_median_mad(flat.T.astype(cp.float64), cp)[1]
    return cp.ascontiguousarray(MAD_TO_SIGMA * mad)

"""One spectrum of the compiled line-width kernel: noise, start, Levenberg-Marquardt fit, acceptance.

Part of :mod:`cpu_fallback.compiled.linewidth` (its docstring states what is computed and the
tolerances); split out to keep modules small. Every function here works on *one* spectrum ``so``
(float32, original channel order) and is a step-for-step transcription of the NumPy oracle
:mod:`cpu_fallback.linewidth` (the same per-pixel arithmetic as the GPU twin's CUDA thread):
sorted-axis access through ``perm``, the half-power run, the window rule, the LM sums and step,
the damping schedule, the stopping and re-windowing rules, and the acceptance rule of
:func:`kernel_common.linefit.significant`. The fit constants come in the float64 array ``c``
(indices below, filled by :func:`constants`), so that the on-disk numba cache never freezes a
stale value of :mod:`kernel_common.linefit`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from cpu_fallback.compiled._linewidth_numerics import mad_decide, median_mad, vexp
from kernel_common import linefit
from kernel_common.constants import FWHM_PER_SIGMA, MAD_TO_SIGMA

# indices into the constants array ``c``
_L0, _LMIN, _LMAX, _FTOL, _XTOL, _STAT, _WSIG, _CSIG, _WSTEP, _ROUNDS, _MINS, _FW, _MADS, _PSNR, _DSNR, _ASNR, _Z2 = (
    range(17))  # fmt: skip


def constants() -> np.ndarray:
    """The fit constants of :mod:`kernel_common.linefit` as the float64 array the kernel reads."""
    return np.array([
        linefit.LAMBDA0, linefit.LAMBDA_MIN, linefit.LAMBDA_MAX, linefit.FTOL, linefit.XTOL, linefit.STAT_TOL,
        linefit.WIN_SIGMA, linefit.COVER_SIGMA, linefit.WIN_STEP, linefit.MAX_ROUNDS, linefit.MIN_SAMPLES,
        FWHM_PER_SIGMA, MAD_TO_SIGMA, linefit.PEAK_SNR, linefit.DETECT_SNR, linefit.AMP_SNR, linefit._Z2_MAX,
    ], dtype=np.float64)  # fmt: skip


@njit(cache=True, inline="always", error_model="numpy")
def _used(v, use_thr, thr):
    """A sample enters the fit: finite and, with a threshold, ``>= thr`` (compared in float64)."""
    return np.isfinite(v) and (not use_thr or np.float64(v) >= thr)


@njit(cache=True, error_model="numpy")
def passes_noise_cut(so, nz, peak, snr_cut, buf):
    """The SNR cut ``peak >= snr_cut * 1.4826 MAD`` over all finite samples of the spectrum (``snr_cut > 0``),
    decided by :func:`mad_decide` where it can (``buf``: float64 scratch of ``nz``)."""
    n = 0
    for k in range(nz):
        v = so[k]
        if np.isfinite(v):
            buf[n] = np.float64(v)
            n += 1
    if n == 0:
        return False
    t = np.float64(peak) / (snr_cut * MAD_TO_SIGMA)
    if not np.isfinite(t):
        return np.float64(peak) >= snr_cut * (MAD_TO_SIGMA * median_mad(buf, n)[1])
    verdict, mad = mad_decide(buf, n, t)
    if verdict != 0:
        return verdict > 0
    return np.float64(peak) >= snr_cut * (MAD_TO_SIGMA * mad)


@njit(cache=True, error_model="numpy")
def _search(u, n, x, right):
    """``numpy.searchsorted(u[:n], x, side='right' if right else 'left')``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if u[mid] < x or (right and u[mid] == x):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, error_model="numpy")
def _window(u, nz, centre, halfw, run_lo, run_hi, step):
    """Fit window ``[lo, hi)`` of the sorted channels (oracle ``_window``)."""
    lo = min(_search(u, nz, centre - halfw, False), run_lo)
    hi = max(_search(u, nz, centre + halfw, True), run_hi)
    hi = max(hi, lo)
    w = hi - lo
    wb = min(nz, max(step, ((w + step - 1) // step) * step))
    lo = min(max(lo - (wb - w) // 2, 0), nz - wb)
    return lo, lo + wb


@njit(cache=True, error_model="numpy")
def _pack(so, perm, u, lo, hi, inv, use_thr, thr, wk):
    """The used samples of window ``[lo, hi)`` as ``y = I / peak`` and ``u`` in ``wk[0], wk[1]``; their count."""
    m = 0
    for k in range(lo, hi):
        v = so[perm[k]]
        if _used(v, use_thr, thr):
            wk[0, m] = np.float64(v) * inv
            wk[1, m] = u[k]
            m += 1
    return m


@njit(cache=True, error_model="numpy")
def _cross(so, perm, u, du, nz, kp, peak, half, inv, step, use_thr, thr):
    """End of the half-power run on one side (``step`` -1 / +1) and the interpolated crossing."""
    a_k, c_k = kp, kp
    a_v, c_v = peak, np.float32(0.0)
    pending, found = False, False
    k = kp + step
    while 0 <= k < nz:
        v = so[perm[k]]
        if _used(v, use_thr, thr):
            if not (v > half):
                if pending:
                    found = True
                    break
                pending, c_k, c_v = True, k, v
            else:
                pending, a_k, a_v = False, k, v
        k += step
    if found or pending:  # a second sample at or below half, or the band edge after one
        ya, ye = np.float64(a_v) * inv, np.float64(c_v) * inv
        return c_k, u[c_k] + (u[a_k] - u[c_k]) * ((0.5 - ye) / (ya - ye))
    if step < 0:
        return -1, u[0] - 0.5 * du[0]
    return nz, u[nz - 1] + 0.5 * du[nz - 1]


@njit(cache=True, error_model="numpy")
def _sums(wk, m, a, mu, sig):
    """``chi^2``, ``T_k = sum g r z^k``, ``S_k = sum g^2 z^k`` over the ``m`` packed window samples (oracle
    ``_sums``, in channel order): ``z`` and ``g = exp(-z^2 / 2)`` first, in a loop that vectorises."""
    y, u, zb, gb = wk[0], wk[1], wk[2], wk[3]
    inv_s = 1.0 / sig
    for i in range(m):
        z = (u[i] - mu) * inv_s
        zb[i] = z
        gb[i] = vexp(z * z * -0.5)
    chi2 = t0 = t1 = t2 = t3 = t4 = s0 = s1 = s2 = s3 = s4 = 0.0
    for i in range(m):
        z = zb[i]
        g = gb[i]
        z2 = z * z
        r = y[i] - g * a
        chi2 += r * r
        gr = r * g
        t0 += gr
        t1 += gr * z
        t2 += gr * z2
        t = gr * z2 * z
        t3 += t
        t4 += t * z
        q = g * g
        s0 += q
        s1 += q * z
        qz2 = q * z2
        s2 += qz2
        s3 += qz2 * z
        s4 += qz2 * z2
    return chi2, t0, t1, t2, t3, t4, s0, s1, s2, s3, s4


@njit(cache=True, error_model="numpy")
def _solve(h00, h01, h02, h11, h12, h22, e0, e1, e2, b0, b1, b2, lam):
    """``(H + lam diag(e)) d = b`` by 3x3 Cholesky (oracle ``_solve``); ``ok`` False where not definite."""
    m00, m11, m22 = h00 + lam * e0, h11 + lam * e1, h22 + lam * e2
    l00 = np.sqrt(m00)
    l10, l20 = h01 / l00, h02 / l00
    d11 = m11 - l10 * l10
    l11 = np.sqrt(d11)
    l21 = (h12 - l20 * l10) / l11
    d22 = m22 - l20 * l20 - l21 * l21
    l22 = np.sqrt(d22)
    y0 = b0 / l00
    y1 = (b1 - l10 * y0) / l11
    y2 = (b2 - l20 * y0 - l21 * y1) / l22
    x2 = y2 / l22
    x1 = (y1 - l21 * x2) / l11
    x0 = (y0 - l10 * x1 - l20 * x2) / l00
    ok = m00 > 0 and d11 > 0 and d22 > 0 and np.isfinite(x0) and np.isfinite(x1) and np.isfinite(x2)
    return x0, x1, x2, ok


@njit(cache=True, error_model="numpy")
def _lm(wk, u, lo, hi, p0, p1, p2, count, sig_min, span, max_iter, c):  # noqa: C901
    """One LM fit in ``[lo, hi)`` from ``p``: ``(state, q, prev)``; state 1 converged (``q``), 2 failed,
    3 the centre left the window (``q`` the new point, ``prev`` the last point inside)."""
    dof = np.float64(max(count - 3, 1))
    s = _sums(wk, count, p0, p1, p2)
    lam, nu = c[_L0], 2.0
    o0, o1, o2 = p0, p1, p2
    it = 0
    while True:
        chi2, t0, t1, t2, t3, t4, s0, s1, s2, s3, s4 = s
        cc = p0 / p2
        q = p0 / (p2 * p2)
        j00, j01, j02, j11, j12, j22 = s0, cc * s1, cc * s2, cc * cc * s2, cc * cc * s3, cc * cc * s4
        b0, b1, b2 = t0, cc * t1, cc * t2
        d0, d1, d2, ok = _solve(s0, j01 - t1 / p2, j02 - t2 / p2, j11 - q * (t2 - t0), j12 - q * (t3 - 2.0 * t1),
                                j22 - q * (t4 - 3.0 * t2), j00, j11, j22, b0, b1, b2, lam)
        if not ok:  # Gauss-Newton where the exact Hessian is not positive definite
            d0, d1, d2, ok = _solve(j00, j01, j02, j11, j12, j22, j00, j11, j22, b0, b1, b2, lam)
        pred = (b0 * d0 + b1 * d1 + b2 * d2) + lam * (j00 * d0 * d0 + j11 * d1 * d1 + j22 * d2 * d2)
        tol = c[_STAT] * chi2 / dof
        sg = abs(p2)
        xt = c[_XTOL]
        tiny = abs(d0) <= xt * abs(p0) and abs(d1) <= xt * sg and abs(d2) <= xt * sg
        if ok and lam < 1.0 and (pred <= tol or tiny):
            return 1, p0 + d0, p1 + d1, p2 + d2, o0, o1, o2
        n0, n1, n2 = (p0 + d0, p1 + d1, p2 + d2) if ok else (p0, p1, p2)
        ok = ok and n2 != 0
        sn = _sums(wk, count, n0, n1, n2) if ok else s
        acc = ok and sn[0] < chi2
        t = 2.0 * ((chi2 - sn[0]) / pred) - 1.0
        shrink = max(1.0 / 3.0, 1.0 - t * t * t)
        done = (acc and chi2 - sn[0] <= max(c[_FTOL] * chi2, tol)) or (not acc and lam * nu > c[_LMAX])
        if acc:
            lam, nu = max(lam * shrink, c[_LMIN]), 2.0
        else:
            lam, nu = lam * nu, 2.0 * nu
        o0, o1, o2 = p0, p1, p2
        if acc:
            p0, p1, p2, s = n0, n1, n2, sn
        it += 1
        sg = abs(p2)
        bad = acc and (p0 <= 0 or sg < sig_min or sg > span)
        away = acc and not bad and (p1 < u[lo] or p1 > u[hi - 1])
        if done and not bad and not away:
            return 1, p0, p1, p2, o0, o1, o2
        if away:
            return 3, p0, p1, p2, o0, o1, o2
        if bad or it >= max_iter:
            return 2, p0, p1, p2, o0, o1, o2
    return 2, p0, p1, p2, o0, o1, o2  # pragma: no cover - not reached


@njit(cache=True, error_model="numpy")
def fit(so, perm, u, du, udu, nz, kp, peak, use_thr, thr, sig_min, span, max_iter, c, wk):  # noqa: C901
    """Gaussian fit of one spectrum (oracle steps 1-6): ``(A, mu, |sigma|, 1/peak)`` on the scaled axis, or
    NaN ``A`` where it failed. ``kp``: first peak channel (sorted order); ``peak``: float32 peak > 0."""
    inv = 1.0 / np.float64(peak)
    half = np.float32(0.5) * peak
    lft, xl = _cross(so, perm, u, du, nz, kp, peak, half, inv, -1, use_thr, thr)
    rgt, xr = _cross(so, perm, u, du, nz, kp, peak, half, inv, 1, use_thr, thr)
    sig0 = (xr - xl) / c[_FW]
    step, rounds_max, min_s = int(c[_WSTEP]), int(c[_ROUNDS]), int(c[_MINS])
    lo, hi = _window(u, nz, 0.5 * (xl + xr), c[_WSIG] * sig0, lft + 1, rgt, step)
    count = _pack(so, perm, u, lo, hi, inv, use_thr, thr, wk)
    if count < min_s:
        return np.nan, np.nan, np.nan, inv
    num = den = 0.0
    for k in range(lft + 1, rgt):
        v = so[perm[k]]
        if _used(v, use_thr, thr):
            y = np.float64(v) * inv
            num += y * udu[k]
            den += y * du[k]
    p0, p1, p2 = 1.0, num / den, sig0
    q0 = q1 = q2 = np.nan
    rounds = 0
    while True:
        state, q0, q1, q2, o0, o1, o2 = _lm(wk, u, lo, hi, p0, p1, p2, count, sig_min, span, max_iter, c)
        if state == 2:
            return np.nan, np.nan, np.nan, inv
        sg = abs(q2)
        if state == 3:  # widen the window to take in the new centre; go on from the last point in it
            if not (rounds < rounds_max - 1 and u[0] <= q1 <= u[nz - 1]):
                return np.nan, np.nan, np.nan, inv
            lo, hi = _window(u, nz, q1, c[_WSIG] * sg, lo, hi, step)
            p0, p1, p2 = o0, o1, abs(o2)
        else:  # a window short of mu +- 4.5 sigma away from the band edge: fit again from the result
            phys = q0 > 0 and sig_min <= sg <= span and u[0] <= q1 <= u[nz - 1]
            short_lo = lo > 0 and u[lo - 1] >= q1 - c[_CSIG] * sg
            short_hi = hi < nz and u[hi] <= q1 + c[_CSIG] * sg
            if not (rounds < rounds_max - 1 and phys and (short_lo or short_hi)):
                break
            lo, hi = _window(u, nz, q1, c[_WSIG] * sg, nz, 0, step)
            p0, p1, p2 = q0, q1, sg
        rounds += 1
        count = _pack(so, perm, u, lo, hi, inv, use_thr, thr, wk)
        if count < min_s:
            return np.nan, np.nan, np.nan, inv
    sg = abs(q2)
    if np.isfinite(q0) and q0 > 0 and u[0] <= q1 <= u[nz - 1] and sig_min <= sg <= span:
        return q0, q1, sg, inv
    return np.nan, np.nan, np.nan, inv


@njit(cache=True, error_model="numpy")
def _profile_range(u, nz, order, mu, sig, z2max):
    """Original-order channels ``[k0, k1)`` outside which the profile is 0 (``|u - mu| > 1.05 sqrt(z2max) sigma``
    on a monotonic axis; all channels otherwise): the loop of :func:`significant` skips the profile there."""
    if order == 2:
        return 0, nz
    reach = 1.05 * np.sqrt(z2max) * sig
    ka, kb = _search(u, nz, mu - reach, False), _search(u, nz, mu + reach, True)
    return (ka, kb) if order == 0 else (nz - kb, nz - ka)


@njit(cache=True, error_model="numpy")
def significant(so, nz, u, uo, duo, order, use_thr, thr, amp, mu, sig, inv, sig_min, sig_max, c, buf, wk):  # noqa: C901
    """The acceptance rule of :func:`kernel_common.linefit.significant` for one fit (original channel order).

    Detection (peak ``>= 3 s`` and integrated SNR over ``+-1 FWHM >= 6``, ``s`` the robust noise of the
    fit residuals), constraint (``A >= 3 sigma_A``) and bounds; the profile is 0 where ``z^2 >= 100``.
    ``u``: the sorted axis; ``order``: 0 if ``uo`` is ascending, 1 if descending, 2 otherwise; ``wk``:
    ``(4, nz)`` float64 scratch.
    """
    if not (u[0] <= mu <= u[nz - 1] and sig_min <= sig <= sig_max and np.isfinite(amp)):
        return False
    fw2 = c[_FW] * c[_FW]
    z2max = c[_Z2]
    k0, k1 = _profile_range(u, nz, order, mu, sig, z2max)
    flux = flux_n = s0 = s1 = s2 = s3 = s4 = 0.0
    n = 0
    for k in range(k0):  # residual = sample: the profile is 0 here
        v = so[k]
        if _used(v, use_thr, thr):
            buf[n] = np.float64(v) * inv
            n += 1
    for k in range(k1, nz):
        v = so[k]
        if _used(v, use_thr, thr):
            buf[n] = np.float64(v) * inv
            n += 1
    zb, gb = wk[2], wk[3]
    for i in range(k1 - k0):  # the profile, in a loop that vectorises (stores at indices known >= 0)
        z = (uo[k0 + i] - mu) / sig
        z2 = z * z
        zb[i] = z
        g = vexp(-0.5 * min(z2, z2max))
        gb[i] = g if z2 < z2max else 0.0
    for k in range(k0, k1):
        v = so[k]
        if not _used(v, use_thr, thr):
            continue
        yv = np.float64(v) * inv
        z = zb[k - k0]
        z2 = z * z
        g = gb[k - k0]
        if z2 <= fw2:
            flux += yv * duo[k]
            flux_n += duo[k] * duo[k]
        buf[n] = yv - amp * g
        n += 1
        q = g * g
        s0 += q
        q *= z
        s1 += q
        q *= z
        s2 += q
        q *= z
        s3 += q
        q *= z
        s4 += q
    if n < 2:
        return False
    flux_n = np.sqrt(flux_n)
    minor = s2 * s4 - s3 * s3
    det = s0 * minor - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2)
    if not (det > 0 and minor > 0 and flux > 0):
        return False
    root = np.sqrt(minor / det)
    # every test reads s <= bound: the MAD's bound decides most fits without the MAD itself
    t = min(amp / c[_PSNR], flux / (c[_DSNR] * flux_n), amp / (c[_ASNR] * root)) / c[_MADS]
    if np.isfinite(t):
        verdict, mad = mad_decide(buf, n, t)
        if verdict != 0:
            return verdict > 0
    else:
        mad = median_mad(buf, n)[1]
    s = c[_MADS] * mad
    sigma_a = s * root
    detected = amp >= c[_PSNR] * s and flux >= c[_DSNR] * s * flux_n and flux > 0
    constrained = det > 0 and minor > 0 and amp >= c[_ASNR] * sigma_a
    return np.isfinite(s) and detected and constrained

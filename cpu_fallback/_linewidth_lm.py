"""Batched Levenberg-Marquardt steps of the CPU line-width kernel.

Part of :mod:`cpu_fallback.linewidth` (module notes there: steps 4-6); split out to keep
modules small.

CPU-only by design: a private helper module of the NumPy tree (no twin in ``gpu_kernels``, which
runs this step inside its own kernel); nothing outside ``cpu_fallback`` imports it.
"""

from __future__ import annotations

import numpy as np

from cpu_fallback._linewidth_windows import _Fit
from kernel_common.constants import FWHM_PER_SIGMA
from kernel_common.linefit import (
    FTOL,
    LAMBDA0,
    LAMBDA_MAX,
    LAMBDA_MIN,
    MAX_ROUNDS,
    MIN_SAMPLES,
    STAT_TOL,
    XTOL,
    check_columns,
    significant,
)


def _fit_batch(flat, subs, axis, thr, max_iter, fwhm_out, buf, par_out=None):
    """Fit the candidates of a batch (the ``_scan`` results of its blocks) into ``fwhm_out``.

    ``fwhm_out`` (flat, per pixel) gets the FWHM of the accepted fits and NaN elsewhere; ``par_out``
    (shape ``(4, pixels)``: amplitude, centre, σ in the axis' internal units, 1/scale), when given,
    gets the parameters of the accepted fits (the line-fit maps). Either may be ``None``.
    """
    cat = {key: np.concatenate([s[key] for s in subs]) for key in ("pix", "lo", "hi", "inv", "lft", "rgt", "sig0")}
    parts, off = {}, 0
    for s in subs:
        for length, (pos, *arrays) in s["raws"].items():
            parts.setdefault(length, []).append((pos + off, *arrays))
        off += s["pix"].size
    raws = {}
    for length, ps in parts.items():
        raws[length] = (
            np.concatenate([q[0] for q in ps]),
            *(np.concatenate([q[i] for q in ps], axis=1) for i in (1, 2, 3)),
        )
    fit = _Fit(flat, axis, thr, cat["pix"], cat["lo"], cat["hi"], cat["inv"], buf)
    fit.add(raws)
    mu0 = fit.run_mean(cat["lft"], cat["rgt"])
    p = _lm(fit, np.stack([np.ones(mu0.size), mu0, cat["sig0"]]), max_iter)
    a, mu, sig = p[0], p[1], np.abs(p[2])
    u = axis.u
    good = np.isfinite(a) & (a > 0) & (mu >= u[0]) & (mu <= u[-1]) & (sig >= axis.sig_min) & (sig <= axis.span)
    par = np.stack([a, mu, sig, cat["inv"]])
    idx = np.flatnonzero(good)
    idx = idx[np.argsort(mu[idx], kind="stable")]  # chunks of similar centres: few profile channels
    step = check_columns(axis.n)
    for j0 in range(0, idx.size, step):  # the shared significance rule (kernel_common.linefit)
        k = idx[j0 : j0 + step]
        good[k] = significant(flat[:, fit.pix[k]], par[:, k], axis, thr, np)
    if fwhm_out is not None:
        fwhm_out[fit.pix] = np.where(good, FWHM_PER_SIGMA * axis.half * sig, np.nan)
    if par_out is not None:
        par_out[:, fit.pix[good]] = par[:, good]


def _normal(s, p):
    """Hessian ``H`` of ``chi^2 / 2``, ``J^T J`` (entries 00 01 02 11 12 22) and ``J^T r``.

    From the sums ``s`` of :func:`_sums` at ``p = (A, mu, sigma)``, with ``c = A / sigma``,
    ``q = A / sigma^2``: ``J = [g, c g z, c g z^2]``, ``J^T J = [S0, c S1, c S2, c^2 S2,
    c^2 S3, c^2 S4]``, ``J^T r = [T0, c T1, c T2]``, and ``H = J^T J - sum r d2f`` with
    ``sum r d2f = [0, T1 / sigma, T2 / sigma, q (T2 - T0), q (T3 - 2 T1), q (T4 - 3 T2)]``.
    """
    t0, t1, t2, t3, t4, s0, s1, s2, s3, s4 = s[1:]
    a, sig = p[0], p[2]
    c = a / sig
    q = a / (sig * sig)
    jj = np.stack([s0, c * s1, c * s2, c * c * s2, c * c * s3, c * c * s4])
    h = np.stack([
        s0, jj[1] - t1 / sig, jj[2] - t2 / sig,
        jj[3] - q * (t2 - t0), jj[4] - q * (t3 - 2.0 * t1), jj[5] - q * (t4 - 3.0 * t2),
    ])  # fmt: skip
    return h, jj, np.stack([t0, c * t1, c * t2])


def _solve(h, e, b, lam):
    """Solve ``(H + lam diag(e)) d = b`` by 3x3 Cholesky; ``ok`` False where not positive definite.

    ``h``: the 6 entries 00 01 02 11 12 22 of a symmetric matrix; ``e``: 3 damping weights.
    """
    h00, h01, h02, h11, h12, h22 = h
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m00, m11, m22 = h00 + lam * e[0], h11 + lam * e[1], h22 + lam * e[2]
        l00 = np.sqrt(m00)
        l10, l20 = h01 / l00, h02 / l00
        d11 = m11 - l10 * l10
        l11 = np.sqrt(d11)
        l21 = (h12 - l20 * l10) / l11
        d22 = m22 - l20 * l20 - l21 * l21
        l22 = np.sqrt(d22)
        y0 = b[0] / l00
        y1 = (b[1] - l10 * y0) / l11
        y2 = (b[2] - l20 * y0 - l21 * y1) / l22
        x2 = y2 / l22
        x1 = (y1 - l21 * x2) / l11
        x0 = (y0 - l10 * x1 - l20 * x2) / l00
    ok = (m00 > 0) & (d11 > 0) & (d22 > 0) & np.isfinite(x0) & np.isfinite(x1) & np.isfinite(x2)
    return np.stack([x0, x1, x2]), ok


class _State:
    """LM state of the pixels being fitted: parallel arrays, one entry per pixel."""

    FIELDS = ("act", "p", "lam", "nu", "it", "dof", "s")

    def __init__(self, **kw):
        for f in self.FIELDS:
            setattr(self, f, kw[f])

    def take(self, k):
        return _State(**{f: getattr(self, f)[..., k] for f in self.FIELDS})

    def cat(self, other):
        return _State(**{f: np.concatenate([getattr(self, f), getattr(other, f)], axis=-1) for f in self.FIELDS})


def _begin(fit: _Fit, pos: np.ndarray, p: np.ndarray, groups=None) -> _State:
    """Fresh LM state for the pixels ``pos`` (their windows in ``groups``) from parameters ``p``."""
    fit.revive(pos)
    n = pos.size
    return _State(act=pos, p=p, lam=np.full(n, LAMBDA0), nu=np.full(n, 2.0), it=np.zeros(n, np.int64),
                  dof=np.maximum(fit.count[pos] - 3, 1).astype(np.float64), s=fit.sums(pos, p, groups))  # fmt: skip


def _lm(fit: _Fit, p0: np.ndarray, max_iter: int) -> np.ndarray:
    """Batched LM of all pixels of ``fit`` from ``p0`` (3, n): (3, n) result, NaN where failed."""
    out = np.full(p0.shape, np.nan)
    ok0 = fit.count >= MIN_SAMPLES
    st = _begin(fit, np.flatnonzero(ok0), p0[:, ok0])
    sig_min, sig_max = fit.axis.sig_min, fit.axis.span
    while st.act.size:
        chi2 = st.s[0]
        h, jj, b = _normal(st.s, st.p)
        e = jj[[0, 3, 5]]
        # Newton step on the exact Hessian; the Gauss-Newton one where that is not positive definite
        d, ok = _solve(h, e, b, st.lam)
        if not ok.all():
            k = np.flatnonzero(~ok)
            d[:, k], ok[k] = _solve(jj[:, k], e[:, k], b[:, k], st.lam[k])
        # predicted chi^2 decrease of the step: b.d + lam d.diag(J^T J).d
        pred = np.sum(b * d, axis=0) + st.lam * np.sum(e * d * d, axis=0)
        tol = STAT_TOL * chi2 / st.dof
        p, sig = st.p, np.abs(st.p[2])
        tiny = (np.abs(d[0]) <= XTOL * np.abs(p[0])) & (np.abs(d[1]) <= XTOL * sig) & (np.abs(d[2]) <= XTOL * sig)
        done = ok & (st.lam < 1.0) & ((pred <= tol) | tiny)  # a step that would change (almost) nothing
        restart = [_finish(fit, out, st.act[done], p[:, done] + d[:, done])] if done.any() else []
        restart_states = []
        if done.any():
            keep = ~done
            st, d, ok, pred, tol = st.take(keep), d[:, keep], ok[keep], pred[keep], tol[keep]
        if st.act.size:
            p, chi2 = st.p, st.s[0]
            pn = np.where(ok, p + d, p)
            ok &= pn[2] != 0
            sn = fit.sums(st.act, pn)
            acc = ok & (sn[0] < chi2)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                t = 2.0 * ((chi2 - sn[0]) / pred) - 1.0  # 2 (gain ratio) - 1
                shrink = np.maximum(1.0 / 3.0, 1.0 - t * t * t)
            done = (acc & (chi2 - sn[0] <= np.maximum(FTOL * chi2, tol))) | (~acc & (st.lam * st.nu > LAMBDA_MAX))
            st.lam = np.where(acc, np.maximum(st.lam * shrink, LAMBDA_MIN), st.lam * st.nu)
            st.nu = np.where(acc, 2.0, 2.0 * st.nu)
            prev = p
            st.p, st.s = np.where(acc, pn, p), np.where(acc, sn, st.s)
            st.it = st.it + 1
            p, sig = st.p, np.abs(st.p[2])
            # a step out of the physical region ends the fit as failed: no line, or unresolved;
            # one that takes the centre out of the window starts it again in a new window
            bad = acc & ((p[0] <= 0) | (sig < sig_min) | (sig > sig_max))
            away = acc & ~bad & ((p[1] < fit.axis.u[fit.lo[st.act]]) | (p[1] > fit.axis.u[fit.hi[st.act] - 1]))
            done &= ~(bad | away)
            stop = done | bad | away | (st.it >= max_iter)
            if done.any():
                restart.append(_finish(fit, out, st.act[done], p[:, done]))
            if away.any():  # widen the window to take in the new centre; go on from the last point in it
                pos, pa = st.act[away], p[:, away]
                again = (fit.rounds[pos] < MAX_ROUNDS - 1) & (pa[1] >= fit.axis.u[0]) & (pa[1] <= fit.axis.u[-1])
                fit.kill(pos)
                pos, pa, pp = pos[again], pa[:, again], prev[:, away][:, again]
                if pos.size:
                    groups = fit.rewindow(pos, pa[1], np.abs(pa[2]), keep=True)
                    ok1 = fit.count[pos] >= MIN_SAMPLES
                    if ok1.any():
                        new = _begin(fit, pos[ok1], np.stack([pp[0], pp[1], np.abs(pp[2])])[:, ok1], groups)
                        restart_states.append(new)
            if stop.any():
                fit.kill(st.act[stop & ~done & ~away])
                st = st.take(~stop)
        for pos, p in restart:
            if pos.size:
                groups = fit.rewindow(pos, p[1], np.abs(p[2]))
                ok1 = fit.count[pos] >= MIN_SAMPLES
                if ok1.any():
                    st = st.cat(_begin(fit, pos[ok1], np.stack([p[0], p[1], np.abs(p[2])])[:, ok1], groups))
        for new in restart_states:
            st = st.cat(new)
    return out


def _finish(fit: _Fit, out: np.ndarray, pos: np.ndarray, p: np.ndarray):
    """Record converged fits; return ``(positions, parameters)`` of those to fit again.

    A physical fit whose window stops short of ``mu +- 4.5 sigma`` away from the band edge is
    fitted again in a new window, at most ``MAX_ROUNDS - 1`` times.
    """
    fit.kill(pos)
    ax = fit.axis
    sig = np.abs(p[2])
    again = (fit.rounds[pos] < MAX_ROUNDS - 1) & (p[0] > 0) & (sig >= ax.sig_min) & (sig <= ax.span)
    again &= (p[1] >= ax.u[0]) & (p[1] <= ax.u[-1])
    if again.any():
        k = np.flatnonzero(again)
        again[k] = ~fit.covered(pos[k], p[1, k], sig[k])
    out[:, pos[~again]] = p[:, ~again]
    return pos[again], p[:, again]

"""Gaussian line-fit maps after the line-width fit: errors, reduced chi^2, a second component.

Array code for NumPy or CuPy (``xp``), run by both kernel trees (:mod:`cpu_fallback.linefit`,
:mod:`gpu_kernels.linefit`) on the pixels whose one-component fit the line-width kernel accepted
(:func:`kernel_common.linefit.significant`). Everything runs on the scaled problem of that fit:
the used samples of a spectrum (finite, ``>= threshold`` when given) divided by its peak,
``y_i = I_i / peak``, on the scaled axis ``u = (v - c) / h`` (:class:`~kernel_common.linefit.SpectralAxis`),
over the *whole* channel range given to the kernel. The model with ``k`` components is

    ``f(u) = sum_j A_j exp(-(u - mu_j)^2 / (2 sigma_j^2))``

and its Jacobian ``J`` has the columns ``g_j``, ``A_j g_j z_j / sigma_j``, ``A_j g_j z_j^2 / sigma_j``
(``z_j = (u - mu_j) / sigma_j``, ``g_j = exp(-z_j^2 / 2)``).

* **Errors** (as ``scipy.optimize.curve_fit`` with its default ``absolute_sigma=False``): the
  covariance ``C = (J^T J)^-1 RSS / (n - p)`` with ``RSS = sum r_i^2`` of the residuals
  ``r = y - f`` over the ``n`` used samples and ``p = 3k`` parameters; ``err = sqrt(diag C)``.
  The scatter of the residuals stands for the noise, so no noise estimate is needed and the
  errors scale with the data. (``J^T J`` is inverted after scaling it to unit diagonal, by a
  batched Cholesky factorisation; a matrix that is not positive definite gives NaN errors.)
* **Reduced chi^2** ``chi2_nu = RSS / ((n - p) s^2)`` with ``s = 1.4826 MAD(r_i)`` the robust
  noise of the residuals: ~1 for a model that describes the spectrum down to the noise, above 1
  where a misfit (e.g. a second component) leaves structure the MAD does not see.
* **Second component** (``components = 2``). *Starts* (two fits; the converged one with the
  lower RSS is kept): (a) the one-component fit ``(A, mu, sigma)`` plus a component at the
  residual peak, ``k* = argmax (y_i - f_i)``, ``A_2 = y_k* - f_k*``, ``mu_2 = u_k*``,
  ``sigma_2 = max(sigma / 2, 2 sigma_min)`` (a line beside or on top of another); (b) a split,
  ``(A, mu - 0.75 sigma, w)`` and ``(A, mu + 0.75 sigma, w)`` with ``w = max(0.6 sigma,
  2 sigma_min)`` (a blended pair, whose one-component fit sits between the two). *Fit*:
  Levenberg-Marquardt on the six parameters over the whole channel range, kept inside the
  physical region (a step to ``A_j <= 0``, a centre off the axis or ``sigma_j`` outside
  ``[sigma_min, sig_max]`` is rejected like one that raises RSS): steps solve ``(J^T J + lambda diag(J^T J)) d =
  J^T r`` (batched Cholesky), ``lambda0 = 1e-3``, divided by 3 after a step that lowers RSS and
  multiplied by ``nu`` (doubling from 2) after one that does not; converged when an accepted
  step lowers RSS by at most ``1e-4 RSS / (n - p)`` (as the line-width fit) or when ``lambda``
  passes ``1e12`` (no descent left); failed after ``max_iter`` steps. *Acceptance*: converged;
  every component with ``A_j > 0``, its centre inside the axis and ``sigma_min <= |sigma_j| <=
  sig_max`` (the line-width bounds); ``A_j >= 3 err(A_j)``; and the Bayesian information
  criterion ``BIC = n ln(RSS / n) + p ln n`` lower by more than ``BIC_MARGIN = 10`` ("very
  strong" evidence, Kass & Raftery 1995) than the one-component fit's. Otherwise the pixel
  keeps its one-component fit. *Order*: the two components sorted by centre (ascending ``u``,
  i.e. ascending spectral coordinate).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernel_common.constants import MAD_TO_SIGMA
from kernel_common.linefit import LAMBDA0, LAMBDA_MAX, LAMBDA_MIN, STAT_TOL, SpectralAxis
from kernel_common.robust import row_median_mad

#: Two components are kept only if their BIC is lower than one component's by more than this.
BIC_MARGIN = 10.0
#: Each kept component's amplitude must be at least this many times its 1-sigma error.
COMPONENT_SNR = 3.0
#: float64 elements of the Jacobian per chunk (bounds the temporaries of :func:`fit_columns`).
CHUNK_ELEMENTS = 1 << 18
#: The per-component map names, in parameter order.
PARAMS = ("amplitude", "centre", "sigma")


def chunk_columns(nz: int) -> int:
    """Pixels per chunk of :func:`fit_columns` for ``nz`` channels (at least 1)."""
    return max(1, CHUNK_ELEMENTS // max(1, 6 * nz))


def empty_maps(components: int, shape: tuple[int, ...], xp: Any) -> dict[str, Any]:
    """NaN float32 maps ``(components, *shape)`` per parameter and error; ``reduced_chi2``, ``ncomp`` (0)."""
    out = {}
    for name in PARAMS:
        out[name] = xp.full((components, *shape), xp.nan, dtype=xp.float32)
        out[name + "_err"] = xp.full((components, *shape), xp.nan, dtype=xp.float32)
    out["reduced_chi2"] = xp.full(shape, xp.nan, dtype=xp.float32)
    out["ncomp"] = xp.zeros(shape, dtype=xp.float32)
    return out


def model(u: Any, used: Any, p: Any, xp: Any) -> tuple[Any, Any]:
    """Model ``f`` ``(nz, m)`` and Jacobian ``J`` ``(nz, m, 3k)`` at ``p`` ``(3k, m)``; 0 where unused."""
    cols, f = [], 0.0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        for j in range(p.shape[0] // 3):
            a, mu, s = p[3 * j], p[3 * j + 1], p[3 * j + 2]
            z = (u - mu) / s
            g = xp.where(used, xp.exp(-0.5 * z * z), 0.0)
            f = f + a * g
            cols += [g, a * g * z / s, a * g * z * z / s]
    return f, xp.stack(cols, axis=-1)


def chol_solve(a: Any, b: Any, xp: Any) -> tuple[Any, Any]:
    """Solve ``a x = b`` for a batch of symmetric matrices by Cholesky factorisation.

    Parameters
    ----------
    a : array
        ``(m, n, n)`` symmetric matrices.
    b : array
        ``(m, n, r)`` right-hand sides.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    x : array
        ``(m, n, r)`` solutions (meaningless where ``ok`` is False).
    ok : array of bool
        ``(m,)``: the matrix is positive definite and the solution finite.
    """
    m, n, _ = a.shape
    low = xp.zeros_like(a)
    ok = xp.ones(m, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for j in range(n):
            d = a[:, j, j] - (low[:, j, :j] ** 2).sum(axis=1)
            ok &= d > 0
            ljj = xp.sqrt(xp.where(d > 0, d, 1.0))
            low[:, j, j] = ljj
            for i in range(j + 1, n):
                low[:, i, j] = (a[:, i, j] - (low[:, i, :j] * low[:, j, :j]).sum(axis=1)) / ljj
        y = xp.zeros_like(b)
        for i in range(n):
            y[:, i] = (b[:, i] - (low[:, i, :i, None] * y[:, :i]).sum(axis=1)) / low[:, i, i, None]
        x = xp.zeros_like(b)
        for i in reversed(range(n)):
            x[:, i] = (y[:, i] - (low[:, i + 1 :, i, None] * x[:, i + 1 :]).sum(axis=1)) / low[:, i, i, None]
    ok &= xp.isfinite(x).all(axis=(1, 2))
    return x, ok


def fit_stats(y: Any, used: Any, u: Any, p: Any, xp: Any) -> dict[str, Any]:
    """1-sigma errors ``(3k, m)``, ``rss``, used count ``n`` and reduced chi^2 at ``p`` (module notes)."""
    npar = p.shape[0]
    f, jac = model(u, used, p, xp)
    r = xp.where(used, y - f, 0.0)
    rss = (r * r).sum(axis=0)
    n = used.sum(axis=0)
    dof = (n - npar).astype(xp.float64)
    jtj = xp.einsum("kmi,kmj->mij", jac, jac)
    idx = xp.arange(npar)
    with np.errstate(invalid="ignore", divide="ignore"):
        dg = xp.sqrt(jtj[:, idx, idx])  # (m, p)
        corr = jtj / (dg[:, :, None] * dg[:, None, :])
        corr = xp.where(xp.isfinite(corr), corr, 0.0)
        eye = xp.broadcast_to(xp.eye(npar), corr.shape).copy()
        inv, ok = chol_solve(corr, eye, xp)
        var = inv[:, idx, idx] / (dg * dg) * (rss / dof)[:, None]
        err = xp.where(ok[:, None] & (dof[:, None] > 0) & (var >= 0), xp.sqrt(xp.abs(var)), xp.nan).T
        s = MAD_TO_SIGMA * row_median_mad(r.T, xp, valid=used.T, min_count=2)[1]
        rchi2 = xp.where(dof > 0, rss / (dof * s * s), xp.nan)
    return {"err": err, "rss": rss, "n": n, "rchi2": rchi2}


def lm_fit(y: Any, used: Any, u: Any, p0: Any, axis: SpectralAxis, xp: Any, max_iter: int) -> tuple[Any, Any]:
    """Batched Levenberg-Marquardt of the ``k``-component model from ``p0`` ``(3k, m)`` (module notes).

    A step that leaves the physical region (:func:`_inside`) counts as one that does not lower
    RSS. Returns the parameters ``(3k, m)``, the RSS ``(m,)`` and a bool ``(m,)``: converged.
    """
    npar, m = p0.shape
    p_out, chi2_out, converged = p0.copy(), xp.full(m, xp.nan), xp.zeros(m, dtype=bool)
    f, jac = model(u, used, p0, xp)
    r = xp.where(used, y - f, 0.0)
    chi2 = (r * r).sum(axis=0)
    chi2_out[...] = chi2
    dof = xp.maximum(used.sum(axis=0) - npar, 1).astype(xp.float64)
    lam, nu = xp.full(m, LAMBDA0), xp.full(m, 2.0)
    # the working set: the pixels still fitting (their columns only; finished ones leave it)
    pos = xp.flatnonzero(xp.isfinite(chi2) & xp.isfinite(p0).all(axis=0))
    y, used, p, jac, r = y[:, pos], used[:, pos], p0[:, pos], jac[:, pos], r[:, pos]
    chi2, dof, lam, nu = chi2[pos], dof[pos], lam[pos], nu[pos]
    idx = xp.arange(npar)
    for _ in range(max_iter):
        if pos.size == 0:
            break
        jtj = xp.einsum("kmi,kmj->mij", jac, jac)
        grad = xp.einsum("kmi,km->mi", jac, r)
        damped = jtj.copy()
        damped[:, idx, idx] *= 1.0 + lam[:, None]
        d, ok = chol_solve(damped, grad[:, :, None], xp)
        pn = p + d[:, :, 0].T
        fn, jn = model(u, used, pn, xp)
        rn = xp.where(used, y - fn, 0.0)
        chi2n = (rn * rn).sum(axis=0)
        acc = ok & xp.isfinite(chi2n) & (chi2n < chi2) & _inside(pn, axis)
        small = acc & (chi2 - chi2n <= STAT_TOL * chi2 / dof)
        p = xp.where(acc, pn, p)
        jac = xp.where(acc[None, :, None], jn, jac)
        r = xp.where(acc, rn, r)
        chi2 = xp.where(acc, chi2n, chi2)
        lam = xp.where(acc, xp.maximum(lam / 3.0, LAMBDA_MIN), lam * nu)
        nu = xp.where(acc, 2.0, 2.0 * nu)
        done = small | (~acc & (lam > LAMBDA_MAX))
        p_out[:, pos], chi2_out[pos] = p, chi2
        if bool(done.any()):  # sync
            converged[pos[done]] = True
            keep = xp.flatnonzero(~done)
            pos, y, used, p, jac, r = pos[keep], y[:, keep], used[:, keep], p[:, keep], jac[:, keep], r[:, keep]
            chi2, dof, lam, nu = chi2[keep], dof[keep], lam[keep], nu[keep]
    return p_out, chi2_out, converged


def second_start(y: Any, used: Any, u: Any, p1: Any, axis: SpectralAxis, xp: Any) -> Any:
    """Residual-peak start ``(6, m)``: the one-component fit and a component at the residual peak."""
    f, _ = model(u, used, p1, xp)
    r = xp.where(used, y - f, -xp.inf)
    k = xp.argmax(r, axis=0)
    cols = xp.arange(r.shape[1])
    a2 = r[k, cols]
    mu2 = xp.asarray(axis.u_orig)[k]
    s2 = xp.maximum(0.5 * p1[2], 2.0 * axis.sig_min)
    return xp.concatenate([p1, xp.stack([a2, mu2, s2])])


def split_start(p1: Any, axis: SpectralAxis, xp: Any) -> Any:
    """Split start ``(6, m)``: two components of amplitude ``A`` at ``mu -+ 0.75 sigma``, width ``0.6 sigma``."""
    a, mu, s = p1
    w = xp.maximum(0.6 * s, 2.0 * axis.sig_min)
    return xp.stack([a, mu - 0.75 * s, w, a, mu + 0.75 * s, w])


def _inside(p: Any, axis: SpectralAxis) -> Any:
    """Every component physical: ``A > 0``, centre inside the axis, ``sigma`` within the bounds."""
    ok = None
    for j in range(p.shape[0] // 3):
        a, mu, s = p[3 * j], p[3 * j + 1], abs(p[3 * j + 2])
        one = (a > 0) & (mu >= axis.u[0]) & (mu <= axis.u[-1]) & (s >= axis.sig_min) & (s <= axis.sig_max)
        ok = one if ok is None else ok & one
    return ok


def fit_columns(y: Any, par: Any, axis: SpectralAxis, threshold: float | None, components: int,
                max_iter: int, xp: Any) -> dict[str, Any]:
    """Parameters, errors, reduced chi^2 and component count of accepted line-width fits.

    Parameters
    ----------
    y : array
        ``(nz, m)`` samples (data unit) in the original channel order, one column per pixel.
    par : array
        ``(4, m)`` float64 accepted one-component fits: ``A`` (relative to the peak), ``mu``,
        ``|sigma|`` (scaled axis) and ``1 / peak``.
    axis : SpectralAxis
        The kernel's axis (``c``, ``h``: ``v = c + h u``).
    threshold : float or None
        The sample mask (``I >= threshold``).
    components : int
        1 or 2 (module notes).
    max_iter : int
        Levenberg-Marquardt steps of the two-component fit.
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    dict
        float64 arrays in physical units: ``amplitude``, ``centre``, ``sigma`` and their
        ``*_err`` as ``(components, m)`` (data unit; unit of the axis coordinates), ``reduced_chi2``
        and ``ncomp`` (1 or 2) as ``(m,)``; a one-component pixel has NaN in component 2.
    """
    used = xp.isfinite(y)
    if threshold is not None:
        used &= y.astype(xp.float64) >= float(threshold)
    inv = par[3]
    yv = xp.where(used, y.astype(xp.float64) * inv, 0.0)
    u = xp.asarray(axis.u_orig)[:, None]
    p1 = par[:3]
    st1 = fit_stats(yv, used, u, p1, xp)
    m = par.shape[1]
    p = xp.full((3 * components, m), xp.nan)
    err = xp.full((3 * components, m), xp.nan)
    p[:3], err[:3] = p1, st1["err"]
    rchi2 = st1["rchi2"]
    ncomp = xp.ones(m)
    if components == 2:
        pa, ra, ca = lm_fit(yv, used, u, second_start(yv, used, u, p1, axis, xp), axis, xp, max_iter)
        pb, rb, cb = lm_fit(yv, used, u, split_start(p1, axis, xp), axis, xp, max_iter)
        take_b = cb & (~ca | (rb < ra))  # the better of the two converged fits
        p2, conv = xp.where(take_b, pb, pa), ca | cb
        p2[2], p2[5] = xp.abs(p2[2]), xp.abs(p2[5])
        swap = p2[4] < p2[1]  # order by centre
        p2 = xp.where(swap, p2[[3, 4, 5, 0, 1, 2]], p2)
        st2 = fit_stats(yv, used, u, p2, xp)
        n = st1["n"].astype(xp.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            dbic = n * xp.log(st1["rss"] / st2["rss"]) - 3.0 * xp.log(n)
        e2 = st2["err"]
        keep = conv & _inside(p2, axis) & (p2[0] >= COMPONENT_SNR * e2[0]) & (p2[3] >= COMPONENT_SNR * e2[3])
        keep &= xp.isfinite(dbic) & (dbic > BIC_MARGIN)
        p = xp.where(keep, p2, p)
        err = xp.where(keep, e2, err)
        rchi2 = xp.where(keep, st2["rchi2"], rchi2)
        ncomp = xp.where(keep, 2.0, ncomp)
    scale = xp.asarray([1.0, axis.half, axis.half] * components)[:, None]
    scale = xp.where(xp.arange(3 * components)[:, None] % 3 == 0, 1.0 / inv, scale)
    val = p * scale
    val[1::3] += axis.centre
    out = {"reduced_chi2": rchi2, "ncomp": ncomp}
    for j, name in enumerate(PARAMS):
        out[name] = val[j::3]
        out[name + "_err"] = (err * xp.abs(scale))[j::3]
    return out

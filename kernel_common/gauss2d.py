"""2-D elliptical Gaussian fit core (``imfit``), written against the array namespace ``xp``.

The model, parameter order, estimate and batched Levenberg-Marquardt fit are documented in
:mod:`cpu_fallback.fit2d`; that module passes ``numpy``, :mod:`gpu_kernels.fit2d` passes ``cupy``,
so the two trees follow the same algorithm step for step. Host syncs (``# sync``): the
convergence test once per iteration and the scalar moments of the initial estimate.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernel_common.constants import FWHM_PER_SIGMA

#: Parameters per Gaussian component (``A, x0, y0, sigma_a, sigma_b, theta``).
N_COMPONENT_PARAMS = 6
#: Pixels per chunk of the normal-equation accumulation.
PIXEL_CHUNK = 1 << 17
#: Second moment of a Gaussian's intensity above half maximum, per axis, in units of sigma^2.
HALF_MAX_MOMENT = 2.0 * (1.0 - 0.5 * (1.0 + math.log(2.0))) / 0.5 / 2.0


def estimate(xp: Any, image: Any, mask: Any, *, n_components: int, background: bool, window: int) -> Any:
    """Initial parameters (``cpu_fallback.fit2d.estimate_gaussians``) for the namespace ``xp``."""
    a = xp.asarray(image, dtype=xp.float64)
    if a.ndim != 2:
        raise ValueError(f"estimate_gaussians expects a (y, x) plane, got shape {a.shape}")
    ny, nx = a.shape
    valid = xp.isfinite(a) if mask is None else xp.isfinite(a) & xp.asarray(mask, dtype=bool)
    n_params = N_COMPONENT_PARAMS * n_components + int(background)
    usable = int(valid.sum())  # sync
    if usable <= n_params:
        raise ValueError(f"too few usable pixels ({usable}) for {n_params} parameters")
    bkg = float(xp.median(a[valid])) if background else 0.0  # sync
    work = xp.where(valid, a - bkg, -xp.inf)
    params: list[float] = []
    for _ in range(n_components):
        index = int(xp.argmax(work))  # sync
        peak = float(work.reshape(-1)[index])  # sync
        if not (math.isfinite(peak) and peak > 0):
            raise ValueError("no positive peak left for another Gaussian component")
        py, px = divmod(index, nx)
        y0, y1 = max(0, py - window), min(ny, py + window + 1)
        x0, x1 = max(0, px - window), min(nx, px + window + 1)
        box = work[y0:y1, x0:x1]
        wgt = xp.where(box >= 0.5 * peak, box, 0.0)
        total = float(wgt.sum())  # sync
        by, bx = xp.mgrid[y0:y1, x0:x1]
        cx, cy = float((wgt * bx).sum()) / total, float((wgt * by).sum()) / total
        sxx = float((wgt * (bx - cx) ** 2).sum()) / total
        syy = float((wgt * (by - cy) ** 2).sum()) / total
        sxy = float((wgt * (bx - cx) * (by - cy)).sum()) / total
        sa, sb, theta = _moments_to_ellipse(sxx, syy, sxy)
        params += [peak, cx, cy, sa, sb, theta]
        radius = 2.0 * FWHM_PER_SIGMA * max(sa, sb)
        sy0, sy1 = max(0, math.floor(cy - radius)), min(ny, math.ceil(cy + radius) + 1)
        sx0, sx1 = max(0, math.floor(cx - radius)), min(nx, math.ceil(cx + radius) + 1)
        gy, gx = xp.mgrid[sy0:sy1, sx0:sx1]
        near = work[sy0:sy1, sx0:sx1]
        near[(gx - cx) ** 2 + (gy - cy) ** 2 <= radius * radius] = -xp.inf
    if background:
        params.append(bkg)
    return xp.asarray(params, dtype=xp.float64)


def _moments_to_ellipse(sxx: float, syy: float, sxy: float) -> tuple[float, float, float]:
    """σa ≥ σb and θ of the major axis from the half-maximum second moments (σ ≥ 0.5 px)."""
    half_tr = 0.5 * (sxx + syy)
    disc = math.sqrt(max(0.0, 0.25 * (sxx - syy) ** 2 + sxy * sxy))
    big, small = half_tr + disc, max(half_tr - disc, 0.0)
    theta = 0.5 * math.atan2(2.0 * sxy, sxx - syy)
    sa = max(0.5, math.sqrt(big / HALF_MAX_MOMENT))
    sb = max(0.5, math.sqrt(small / HALF_MAX_MOMENT))
    return sa, sb, theta


def model(xp: Any, params: Any, *, shape: tuple[int, int], n_components: int, background: bool) -> Any:
    p = xp.asarray(params, dtype=xp.float64)
    p = p[None] if p.ndim == 1 else p
    ny, nx = shape
    yy, xx = xp.mgrid[0:ny, 0:nx].astype(xp.float64)
    model, _ = _model_and_jacobian(xp, p, xx.reshape(-1), yy.reshape(-1), n_components, background, jacobian=False)
    return model.reshape(p.shape[0], ny, nx)


def fit(xp: Any, images: Any, p0: Any, mask: Any, *, n_components: int, background: bool, max_iter: int,
         tol: float) -> dict[str, Any]:
    d = xp.asarray(images, dtype=xp.float64)
    if d.ndim == 2:
        d = d[None]
    nb, ny, nx = d.shape
    p = xp.array(xp.asarray(p0, dtype=xp.float64), copy=True)
    p = p[None] if p.ndim == 1 else p
    n_params = N_COMPONENT_PARAMS * n_components + int(background)
    if p.shape != (nb, n_params):
        raise ValueError(f"p0 has shape {p.shape}, expected {(nb, n_params)}")
    w = xp.isfinite(d)
    if mask is not None:
        w &= xp.broadcast_to(xp.asarray(mask, dtype=bool), d.shape)
    data = xp.where(w, d, 0.0).reshape(nb, -1)
    weight = w.reshape(nb, -1).astype(xp.float64)
    npix = weight.sum(axis=1)
    n_total = ny * nx

    def coords(sl: slice) -> tuple[Any, Any]:
        flat = xp.arange(sl.start, min(sl.stop, n_total), dtype=xp.int64)
        return (flat % nx).astype(xp.float64), (flat // nx).astype(xp.float64)

    def chi2_of(q: Any) -> Any:
        total = xp.zeros(nb)
        for s in range(0, n_total, PIXEL_CHUNK):
            sl = slice(s, s + PIXEL_CHUNK)
            model, _ = _model_and_jacobian(xp, q, *coords(sl), n_components, background, jacobian=False)
            r = (data[:, sl] - model) * weight[:, sl]
            total += (r * r).sum(axis=1)
        return total

    def normal_equations(q: Any) -> tuple[Any, Any]:
        jtj = xp.zeros((nb, n_params, n_params))
        jtr = xp.zeros((nb, n_params))
        for s in range(0, n_total, PIXEL_CHUNK):
            sl = slice(s, s + PIXEL_CHUNK)
            model, jac = _model_and_jacobian(xp, q, *coords(sl), n_components, background, jacobian=True)
            jac *= weight[:, None, sl]
            r = (data[:, sl] - model) * weight[:, sl]
            jtj += xp.matmul(jac, jac.transpose(0, 2, 1))
            jtr += xp.matmul(jac, r[:, :, None])[:, :, 0]
        return jtj, jtr

    chi2 = chi2_of(p)
    lam = xp.full(nb, 1e-3)
    active = xp.ones(nb, dtype=bool)
    converged = xp.zeros(nb, dtype=bool)
    iterations = xp.zeros(nb, dtype=xp.int64)
    eye = xp.eye(n_params)
    for _ in range(max_iter):
        if not bool(active.any()):  # sync
            break
        jtj, jtr = normal_equations(p)
        diag = xp.diagonal(jtj, axis1=1, axis2=2)
        damp = lam[:, None, None] * (diag[:, :, None] * eye + 1e-12 * eye)
        delta = _solve(xp, jtj + damp, jtr)
        trial = p + delta
        chi2_new = chi2_of(trial)
        better = active & xp.isfinite(chi2_new) & (chi2_new < chi2)
        small_step = xp.all(xp.abs(delta) <= tol * (xp.abs(p) + tol), axis=1)
        done = better & ((chi2 - chi2_new) <= tol * chi2)
        done |= active & small_step
        done |= active & ~better & (lam > 1e10)
        iterations += active
        p = xp.where(better[:, None], trial, p)
        chi2 = xp.where(better, chi2_new, chi2)
        lam = xp.where(better, xp.maximum(lam / 10.0, 1e-12), lam * 10.0)
        converged |= done
        active &= ~done
    jtj, _ = normal_equations(p)
    dof = xp.maximum(npix - n_params, 1.0)
    cov = _inverse(xp, jtj) * (chi2 / dof)[:, None, None]
    errors = xp.sqrt(xp.abs(xp.diagonal(cov, axis1=1, axis2=2)))
    p, errors = _normalise(xp, p, errors, n_components)
    return {"params": p, "errors": errors, "chi2": chi2, "npix": npix, "iterations": iterations,
            "converged": converged}


def _solve(xp: Any, a: Any, b: Any) -> Any:
    """Batched ``a·x = b``; a singular system gives a least-squares step."""
    try:
        out = xp.linalg.solve(a, b[..., None])[..., 0]
    except np.linalg.LinAlgError:
        out = None
    if out is None or not bool(xp.isfinite(out).all()):  # sync
        out = xp.stack([xp.linalg.lstsq(a[i], b[i], rcond=None)[0] for i in range(a.shape[0])])
    return out


def _inverse(xp: Any, a: Any) -> Any:
    """Batched pseudo-inverse of the (symmetric) normal matrices."""
    return xp.stack([xp.linalg.pinv(a[i]) for i in range(a.shape[0])])


def _model_and_jacobian(xp: Any, p: Any, x: Any, y: Any, n_components: int, background: bool,
                        *, jacobian: bool) -> tuple[Any, Any]:
    """Model ``(B, n)`` and, when asked, Jacobian ``(B, P, n)`` at pixel coordinates ``x``, ``y``."""
    nb = p.shape[0]
    n = x.size
    model = xp.zeros((nb, n))
    jac = xp.empty((nb, p.shape[1], n)) if jacobian else None
    for k in range(n_components):
        amp, x0, y0, sa, sb, th = (p[:, N_COMPONENT_PARAMS * k + i, None] for i in range(N_COMPONENT_PARAMS))
        c, s = xp.cos(th), xp.sin(th)
        dx, dy = x[None, :] - x0, y[None, :] - y0
        u = dx * c + dy * s
        v = -dx * s + dy * c
        ia, ib = 1.0 / (sa * sa), 1.0 / (sb * sb)
        e = xp.exp(-0.5 * (u * u * ia + v * v * ib))
        g = amp * e
        model += g
        if jac is not None:
            j = N_COMPONENT_PARAMS * k
            jac[:, j] = e
            jac[:, j + 1] = g * (u * c * ia - v * s * ib)
            jac[:, j + 2] = g * (u * s * ia + v * c * ib)
            jac[:, j + 3] = g * u * u * ia / sa
            jac[:, j + 4] = g * v * v * ib / sb
            jac[:, j + 5] = g * u * v * (ib - ia)
    if background:
        model += p[:, -1, None]
        if jac is not None:
            jac[:, -1] = 1.0
    return model, jac


def _normalise(xp: Any, p: Any, err: Any, n_components: int) -> tuple[Any, Any]:
    """``σa ≥ σb > 0`` (swapping the axes turns θ by 90°) and ``θ`` in ``[0, π)``."""
    p, err = p.copy(), err.copy()
    for k in range(n_components):
        j = N_COMPONENT_PARAMS * k
        sa, sb = xp.abs(p[:, j + 3]), xp.abs(p[:, j + 4])
        swap = sb > sa
        p[:, j + 3], p[:, j + 4] = xp.where(swap, sb, sa), xp.where(swap, sa, sb)
        ea, eb = err[:, j + 3].copy(), err[:, j + 4].copy()
        err[:, j + 3], err[:, j + 4] = xp.where(swap, eb, ea), xp.where(swap, ea, eb)
        p[:, j + 5] = xp.mod(p[:, j + 5] + xp.where(swap, 0.5 * math.pi, 0.0), math.pi)
    return p, err

"""Per-pixel line widths on the CPU: Gaussian FWHM by batched Levenberg-Marquardt, and EW.

Backs ``POST /v1/spectral/linewidth`` (client contract §6.2). The service crops the channel
range and passes the ``(spectral, y, x)`` cube with the channel centres ``coords`` and the
channel widths ``widths`` (same spectral unit, e.g. km/s; ``widths > 0``).

Per spatial pixel, over the *used* samples (finite, and ``>= threshold`` when one is given):

* ``M0 = sum I_i dv_i``, ``peak = max I_i``, ``EW = M0 / peak`` (a boxcar-equivalent width).
* Robust noise ``sigma_N = 1.4826 * MAD`` over all finite samples of the spectrum.
* The pixel is *blank* (both maps NaN) when it has no used sample, ``M0 <= 0``, ``peak <= 0``
  or ``peak < snr_cut * sigma_N`` (``snr_cut = 0`` disables the cut).
* ``FWHM = 2 sqrt(2 ln 2) sigma = 2.3548 sigma`` from the least-squares fit of
  ``f(v) = A exp(-(v - mu)^2 / (2 sigma^2))`` (no constant offset: the cube is expected to be
  continuum-subtracted, and an offset is degenerate with a wide line in a narrow window).

Fit (shared step for step with :mod:`gpu_kernels.linewidth`): the axis is mapped to
``u = (v - c) / h`` (``c`` centre, ``h`` half-span of ``coords``) and the data divided by the
pixel's peak. Start (moment estimates over the channels above half the peak): ``A0 = 1``,
``mu0`` = their intensity-weighted mean coordinate, ``sigma0 = W / 2.3548`` with ``W`` their
summed width. Levenberg-Marquardt with Marquardt
damping ``(J^T J + lambda diag(J^T J)) delta = J^T r`` (``lambda0 = 1e-3``, /10 after an
accepted step, x10 after a rejected one), 3x3 systems solved by an explicit Cholesky
factorisation for all pixels at once. Converged when an accepted step changes ``chi^2`` by at
most ``1e-12 chi^2``, when the next Gauss-Newton step (``lambda < 1``) would change every
parameter by at most ``1e-9`` of its scale (``|A|``, ``|sigma|``, ``|sigma|``), or when
``lambda > 1e12`` (no descent left). Not converged after ``max_iter`` steps, fewer than 4 used
samples, ``A <= 0``, ``mu`` outside the axis or ``sigma`` not in ``(0, span]`` -> FWHM NaN.

Vectorisation: one LM state (arrays of parameters, damping, ``chi^2``, ``J^T J``, ``J^T r``) for
all candidate pixels; each step evaluates the model in blocks of about ``2**15`` samples so the
temporaries stay in cache, and converged pixels leave the active set. No loop over pixels.
Each pixel's arithmetic is independent of the others, so a y-slab chunk gives exactly the
whole-cube result.
"""

from __future__ import annotations

import numpy as np

_Array = np.ndarray

#: FWHM / sigma of a Gaussian, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Robust sigma / MAD for Gaussian noise (the contract's constant).
MAD_TO_SIGMA = 1.4826
_LAMBDA0, _LAMBDA_MAX, _FTOL, _XTOL = 1e-3, 1e12, 1e-12, 1e-9
_MIN_SAMPLES = 4
_BLOCK_ELEMENTS = 1 << 15


def equivalent_width(cube: _Array, widths: _Array, *, snr_cut: float = 0.0, threshold: float | None = None) -> _Array:
    """Equivalent-width map ``EW = sum(I dv) / max(I)`` of a ``(spectral, y, x)`` cube.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities (e.g. Jy/beam); non-finite values are blank.
    widths : numpy.ndarray
        ``(nz,)`` channel widths ``dv_i > 0`` in the spectral unit.
    snr_cut : float, optional
        Blank pixels with ``peak < snr_cut * 1.4826 * MAD``; 0 (default) disables the cut.
    threshold : float or None, optional
        If given, only samples ``>= threshold`` are used (the moment-map mask rule).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 EW in the spectral unit; NaN for blank pixels (see module notes).
    """
    ew = _prepare(cube, widths, snr_cut, threshold)[4]
    return ew.reshape(np.shape(cube)[1:]).astype(np.float32)


def gaussian_linewidth(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    snr_cut: float = 3.0,
    threshold: float | None = None,
    max_iter: int = 100,
) -> tuple[_Array, _Array]:
    """Gaussian FWHM and equivalent-width maps of a ``(spectral, y, x)`` cube.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities; non-finite values are blank. Any float dtype.
    coords : numpy.ndarray
        ``(nz,)`` channel centres ``v_i`` (e.g. km/s), monotonic or not.
    widths : numpy.ndarray
        ``(nz,)`` channel widths ``dv_i > 0`` in the same unit.
    snr_cut : float, optional
        Peak over robust noise below which a pixel is blank; 0 disables. Default 3.
    threshold : float or None, optional
        If given, only samples ``>= threshold`` enter EW and the fit.
    max_iter : int, optional
        Levenberg-Marquardt steps per pixel before the fit counts as failed. Default 100.

    Returns
    -------
    fwhm : numpy.ndarray
        ``(ny, nx)`` float32, ``2.3548 * sigma`` in the unit of ``coords``; NaN where blank or
        where the fit failed, did not converge or is non-physical.
    ew : numpy.ndarray
        ``(ny, nx)`` float32, ``sum(I dv) / max(I)`` in the unit of ``widths``; NaN where blank.
    """
    shape = np.shape(cube)[1:]
    y, w, peak, ok, ew = _prepare(cube, widths, snr_cut, threshold)
    x = np.asarray(coords, dtype=np.float64)
    if x.shape != (y.shape[1],):
        raise ValueError(f"coords must have shape ({y.shape[1]},), got {x.shape}")
    centre, half = _axis_scale(x)
    u = (x - centre) / half
    dv = np.asarray(widths, dtype=np.float64) / half
    fwhm = np.full(y.shape[0], np.nan)
    cand = np.flatnonzero(ok & (w.sum(axis=1) >= _MIN_SAMPLES))
    if cand.size:
        yc, wc = y[cand] * (1.0 / peak[cand])[:, None], w[cand]
        a, mu, sig, good = _lm_fit(u, dv, yc, None if wc.all() else wc, max_iter)
        span = float(u.max() - u.min())
        good &= (a > 0) & (mu >= u.min()) & (mu <= u.max()) & (sig > 0) & (sig <= span)
        fwhm[cand] = np.where(good, FWHM_PER_SIGMA * sig * half, np.nan)
    return fwhm.reshape(shape).astype(np.float32), ew.reshape(shape).astype(np.float32)


def _axis_scale(x: np.ndarray) -> tuple[float, float]:
    """Centre and half-span of the spectral axis (half-span 1 for a single channel)."""
    lo, hi = float(x.min()), float(x.max())
    half = 0.5 * (hi - lo)
    return 0.5 * (hi + lo), (half if half > 0 else 1.0)


def _prepare(cube, widths, snr_cut, threshold):
    """Spectra as float64 ``(npix, nz)`` rows (unused samples 0), bool use mask, peak, candidate, EW."""
    a = np.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    nz = a.shape[0]
    dv = np.asarray(widths, dtype=np.float64)
    if dv.shape != (nz,):
        raise ValueError(f"widths must have shape ({nz},), got {dv.shape}")
    y = np.ascontiguousarray(a.reshape(nz, -1).T, dtype=np.float64)
    fin = np.isfinite(y)
    use = fin if threshold is None else fin & (y >= threshold)
    noise = MAD_TO_SIGMA * _row_mad(y, fin)
    y[~use] = 0.0
    has = use.any(axis=1)
    peak = np.where(has, np.where(use, y, -np.inf).max(axis=1, initial=-np.inf), np.nan)
    m0 = y @ dv
    ok = has & (m0 > 0) & (peak > 0)
    if snr_cut > 0:
        ok &= peak >= snr_cut * noise
    with np.errstate(invalid="ignore", divide="ignore"):
        ew = np.where(ok, m0 / peak, np.nan)
    return y, use, peak, ok, ew


def _row_mad(y: np.ndarray, fin: np.ndarray) -> np.ndarray:
    """Unscaled MAD of the finite values of each row (NaN for an all-blank row)."""
    n = fin.sum(axis=1)
    lo, hi = ((np.maximum(n, 1) - 1) // 2)[:, None], (n // 2)[:, None]
    s = np.sort(np.where(fin, y, np.inf), axis=1)
    med = 0.5 * (np.take_along_axis(s, lo, 1) + np.take_along_axis(s, hi, 1))
    med = np.where(n[:, None] > 0, med, 0.0)
    cols = np.arange(y.shape[1])[None, :]
    d = np.sort(np.where(cols < n[:, None], np.abs(s - med), np.inf), axis=1)
    mad = 0.5 * (np.take_along_axis(d, lo, 1) + np.take_along_axis(d, hi, 1))[:, 0]
    return np.where(n > 0, mad, np.nan)


def _start(u: np.ndarray, dv: np.ndarray, y: np.ndarray, w: np.ndarray | None):
    """Moment start ``(mu0, sigma0)`` from the used channels above half the (unit) peak."""
    above = y > 0.5 if w is None else (y > 0.5) & (w > 0)
    hm = np.where(above, y, 0.0)
    mu0 = hm @ (u * dv) / (hm @ dv)
    sig0 = np.where(above, 1.0, 0.0) @ dv / FWHM_PER_SIGMA
    return mu0, sig0


def _sums(u, y, w, rows, p):
    """:func:`_block_sums` over the ``rows`` of ``y`` in cache-sized blocks."""
    step = max(1, _BLOCK_ELEMENTS // y.shape[1])
    parts = []
    for i in range(0, rows.size, step):
        r = rows[i : i + step]
        wb = None if w is None else w[r]
        parts.append(_block_sums(u, y[r], wb, *p[:, i : i + step]))
    if not parts:
        return np.zeros(0), np.zeros((6, 0)), np.zeros((3, 0))
    return tuple(np.concatenate(x, axis=-1) for x in zip(*parts, strict=True))


def _block_sums(u, y, w, a, mu, sig):
    """``chi^2``, ``J^T J`` (6 entries) and ``J^T r`` (3) of the Gaussian at ``(a, mu, sig)``.

    With ``z = (u - mu) / sigma``, ``g = exp(-z^2 / 2)`` (0 on unused samples) and
    ``r = y - A g``: ``J = [g, (A/sigma) g z, (A/sigma) g z^2]``, so ``J^T J`` needs
    ``S_k = sum g^2 z^k`` (k = 0..4) and ``J^T r`` needs ``T_k = sum g r z^k`` (k = 0..2).
    """
    z = u[None, :] - mu[:, None]
    z *= (1.0 / sig)[:, None]
    z2 = z * z
    g = np.multiply(z2, -0.5)
    np.exp(g, out=g)
    if w is not None:
        g *= w
    r = g * a[:, None]
    np.subtract(y, r, out=r)
    chi2 = _dot(r, r)
    r *= g
    t0, t1, t2 = r.sum(axis=1), _dot(r, z), _dot(r, z2)
    g *= g
    s0, s1, s2 = g.sum(axis=1), _dot(g, z), _dot(g, z2)
    g *= z2
    s3, s4 = _dot(g, z), _dot(g, z2)
    c = a / sig
    h = np.stack([s0, c * s1, c * s2, c * c * s2, c * c * s3, c * c * s4])
    return chi2, h, np.stack([t0, c * t1, c * t2])


def _dot(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two ``(n, m)`` arrays."""
    return np.einsum("pn,pn->p", p, q)


def _solve(h: np.ndarray, b: np.ndarray, lam: np.ndarray):
    """Solve ``(H + lam diag H) d = b`` by 3x3 Cholesky; ``ok`` False where not positive definite."""
    h00, h01, h02, h11, h12, h22 = h
    with np.errstate(invalid="ignore", divide="ignore"):
        m00, m11, m22 = h00 * (1 + lam), h11 * (1 + lam), h22 * (1 + lam)
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
    return x0, x1, x2, ok


def _lm_fit(u, dv, y, w, max_iter):
    """Batched LM on unit-peak rows ``y`` (``w`` None: all used); ``(A, mu, |sigma|, converged)``."""
    n = y.shape[0]
    mu0, sig0 = _start(u, dv, y, w)
    p = np.stack([np.ones(n), mu0, sig0])
    out = np.full((3, n), np.nan)
    lam = np.full(n, _LAMBDA0)
    act = np.arange(n)
    chi2, h, b = _sums(u, y, w, act, p)
    for _ in range(max_iter):
        d0, d1, d2, ok = _solve(h, b, lam)
        d = np.stack([d0, d1, d2])
        scale = _XTOL * np.stack([np.abs(p[0]), np.abs(p[2]), np.abs(p[2])])
        # A (near) Gauss-Newton step that would move nothing: already at the minimum.
        fin = ok & (lam < 1.0) & np.all(np.abs(d) <= scale, axis=0)
        if fin.any():
            out[:, act[fin]] = p[:, fin]
            k = ~fin
            act, p, chi2, h, b, lam = act[k], p[:, k], chi2[k], h[:, k], b[:, k], lam[k]
            d, ok = d[:, k], ok[k]
        pn = np.where(ok, p + d, p)
        ok &= pn[2] != 0
        c2, hn, bn = _sums(u, y, w, act, pn)
        acc = ok & (c2 < chi2)
        lam = np.where(acc, np.maximum(lam / 10, 1e-12), lam * 10)
        fin = (acc & (chi2 - c2 <= _FTOL * chi2)) | (lam > _LAMBDA_MAX)
        p, chi2 = np.where(acc, pn, p), np.where(acc, c2, chi2)
        h, b = np.where(acc, hn, h), np.where(acc, bn, b)
        if fin.any():
            out[:, act[fin]] = p[:, fin]
            k = ~fin
            act, p, chi2, h, b, lam = act[k], p[:, k], chi2[k], h[:, k], b[:, k], lam[k]
        if act.size == 0:
            break
    return out[0], out[1], np.abs(out[2]), np.isfinite(out[0])

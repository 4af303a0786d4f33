"""Pieces of the per-pixel Gaussian line-width fit shared by both kernel trees.

The fit itself is documented step by step in :mod:`cpu_fallback.linewidth`; the GPU kernel
(:mod:`gpu_kernels.linewidth`) follows it in one CUDA thread per pixel. What both need is here,
once: the spectral axis in ascending order and its scaled forms (:class:`SpectralAxis`), the
fit constants (:func:`fit_defines` hands them to the CUDA source), and the acceptance rule of a
finished fit (:func:`significant`), array code for NumPy or CuPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernel_common.constants import FWHM_PER_SIGMA, MAD_TO_SIGMA
from kernel_common.robust import row_median_mad

#: Levenberg-Marquardt: initial, smallest and largest damping; relative chi^2 and step tolerances.
LAMBDA0, LAMBDA_MIN, LAMBDA_MAX, FTOL, XTOL = 1e-3, 1e-12, 1e12, 1e-12, 1e-9
#: Converged when a step would lower, or an accepted step lowered, chi^2 by at most this
#: fraction of chi^2 / dof (the noise variance): a step of ~1 % of the standard errors.
STAT_TOL = 1e-4
#: Smallest sigma, in units of the narrowest channel width (a narrower line is unresolved).
SIGMA_MIN = 0.5
#: Fewest used samples in a fit window.
MIN_SAMPLES = 4
#: Window half-width in sigma when built, and the half-width a converged fit's window must cover.
WIN_SIGMA, COVER_SIGMA = 5.0, 4.5
#: Window lengths are multiples of this many channels (and at least this many).
WIN_STEP = 8
#: Fits per pixel at most (the first and up to two with a wider or moved window).
MAX_ROUNDS = 3


class SpectralAxis:
    """The spectral axis in ascending order (stable sort of ``coords``) and its scaled forms.

    With ``c`` the centre and ``h`` the half-span of ``coords`` (1 for a single channel), the
    sorted axis is ``u = (v - c) / h`` with widths ``du = dv / h``. ``sig_min`` and
    ``sig_max`` bound the fitted ``|sigma|`` (in ``u``): ``sig_min = SIGMA_MIN * min(du)``
    (a narrower line is unresolved) and ``sig_max = W / FWHM_PER_SIGMA`` with ``W`` the
    window width ``u[-1] - u[0] + (du[0] + du[-1]) / 2`` (edge to edge): a FWHM wider than
    the channel range given to the kernel is not measured by it.

    Parameters
    ----------
    coords : numpy.ndarray or None
        ``(nz,)`` float64 channel centres (None: all zero, for the equivalent width only).
    widths : numpy.ndarray
        ``(nz,)`` float64 channel widths ``> 0``, same unit.
    """

    def __init__(self, coords: np.ndarray | None, widths: np.ndarray) -> None:
        nz = widths.size
        x = np.zeros(nz) if coords is None else coords
        self.n = nz
        self.perm = np.argsort(x, kind="stable")
        self.order = "same" if np.array_equal(self.perm, np.arange(nz)) else "other"
        if self.order == "other" and np.array_equal(self.perm, np.arange(nz)[::-1]):
            self.order = "reversed"
        self.centre, self.half = axis_scale(x)
        self.u = (x[self.perm] - self.centre) / self.half
        self.du = widths[self.perm] / self.half
        self.udu = self.u * self.du
        self.dv = widths[self.perm]
        self.span = self.u[-1] - self.u[0]
        self.width = self.span + 0.5 * (self.du[0] + self.du[-1])
        self.sig_min = SIGMA_MIN * self.du.min()
        self.sig_max = self.width / FWHM_PER_SIGMA
        self.uniform = bool(np.all(widths == widths[0]))
        self.strict = bool(np.all(np.diff(self.u) > 0))
        #: ``u`` and ``du`` in the original channel order (for array code on unsorted spectra).
        self.u_orig = (x - self.centre) / self.half
        self.du_orig = widths / self.half

    def rows(self, flat: np.ndarray, p0: int, p1: int) -> np.ndarray:
        """Pixels ``p0:p1`` of the ``(channel, pixel)`` array ``flat`` in ascending-axis order."""
        if self.order == "same":
            return flat[:, p0:p1]
        return flat[::-1, p0:p1] if self.order == "reversed" else flat[self.perm, p0:p1]


def axis_scale(x: np.ndarray) -> tuple[float, float]:
    """Centre and half-span of the spectral axis (half-span 1 for a single channel)."""
    lo, hi = float(x.min()), float(x.max())
    half = 0.5 * (hi - lo)
    return 0.5 * (hi + lo), (half if half > 0 else 1.0)


def fit_defines() -> tuple[tuple[str, Any], ...]:
    """The fit constants as ``(name, value)`` pairs for ``#define`` lines of the CUDA source."""
    return (
        ("LAMBDA0", LAMBDA0), ("LAMBDA_MIN", LAMBDA_MIN), ("LAMBDA_MAX", LAMBDA_MAX), ("FTOL", FTOL),
        ("XTOL", XTOL), ("STAT_TOL", STAT_TOL), ("WIN_SIGMA", WIN_SIGMA), ("COVER_SIGMA", COVER_SIGMA),
        ("WIN_STEP", WIN_STEP), ("MAX_ROUNDS", MAX_ROUNDS), ("MIN_SAMPLES", MIN_SAMPLES),
        ("FWHM_PER_SIGMA", FWHM_PER_SIGMA),
    )  # fmt: skip


#: Detection: the line's integrated signal-to-noise over ``|v - mu| <= FWHM`` must reach this.
DETECT_SNR = 6.0
#: Detection: the fitted peak ``A`` must reach this many times the robust noise ``sigma_N``.
PEAK_SNR = 3.0
#: Constraint: the fitted amplitude must be at least this many times its 1-sigma uncertainty.
AMP_SNR = 3.0
#: Largest z^2 at which the line profile is evaluated (g = exp(-50) ~ 2e-22 of the peak; 0 beyond,
#: far below rounding of every sum it enters).
_Z2_MAX = 100.0
#: float64 elements per chunk of :func:`significant` (bounds its temporaries).
CHECK_ELEMENTS = 1 << 20


def check_columns(nz: int) -> int:
    """Pixels per chunk of :func:`significant` for ``nz`` channels (at least 1)."""
    return max(1, CHECK_ELEMENTS // max(1, nz))


def significant(y: Any, par: Any, axis: SpectralAxis, threshold: float | None, xp: Any) -> Any:
    """Which finished fits are significant detections with a well-constrained amplitude.

    Applied by both kernel trees, as this same array code, to every fit the LM returned.
    With the used samples of a spectrum (finite, ``>= threshold`` when given) scaled to
    ``y_i = I_i / peak`` on the scaled axis ``u``, the fit ``f_i = A g_i``,
    ``g_i = exp(-z_i^2 / 2)``, ``z_i = (u_i - mu) / sigma``, and the noise
    ``s = 1.4826 MAD(y_i - f_i)`` of the fit residuals (robust; unlike the MAD of the
    spectrum itself it is not inflated by a line that fills the window), a fit is kept when

    * *bounds*: ``u[0] <= mu <= u[-1]`` (centre inside the channel range) and
      ``sig_min <= |sigma| <= sig_max`` (FWHM from 1.18 of the narrowest channel to the
      window width; the LM itself bounds ``|sigma|`` only by the span, so that its path
      does not depend on this rule);
    * *detection* (noise rarely passes it): the fitted peak ``A >= PEAK_SNR s`` (3: the
      peak SNR of the spectrum smoothed by the fitted line profile) and the integrated SNR
      over the line ``sum y_i du_i / (s sqrt(sum du_i^2)) >= DETECT_SNR`` (6) over the used
      channels with ``|u_i - mu| <= FWHM`` (+-2.35 sigma, 98 % of the line's flux). For pure
      noise the latter is a normal deviate: a 6-sigma excursion has probability 1e-9 per
      trial, so even the best of the few hundred windows a spectrum offers rarely passes;
    * *constraint*: ``A >= AMP_SNR sigma_A`` (3), with the amplitude's 1-sigma error
      ``sigma_A = s sqrt((J^T J)^-1_00)`` from the Jacobian ``J = [g, A g z / sigma,
      A g z^2 / sigma]`` over the used channels (``(J^T J)^-1_00 = (S2 S4 - S3^2) / det S``
      with ``S_k = sum g^2 z^k``: the ``A / sigma`` factors cancel).

    Parameters
    ----------
    y : array
        ``(nz, m)`` samples (data units) in the *original* channel order (``axis.u_orig``).
    par : array
        ``(4, m)`` float64 ``A`` (relative to the peak), ``mu``, ``|sigma|`` (scaled axis
        units) and ``1 / peak``; NaN where there is no fit.
    axis : SpectralAxis
        The kernel's axis.
    threshold : float or None
        The sample mask of the kernel (``I >= threshold``).
    xp : module
        ``numpy`` or ``cupy``.

    Returns
    -------
    array of bool
        ``(m,)``: True where the fit is kept.
    """
    amp, mu, sig, inv = par[0], par[1], par[2], par[3]
    used = xp.isfinite(y)
    if threshold is not None:
        used &= y.astype(xp.float64) >= float(threshold)  # compared in float64, as the kernels do
    yv = y.astype(xp.float64) * inv  # unused samples are masked below, never summed
    # channels where some pixel's profile is evaluated (|z| < sqrt(Z2_MAX)); g = 0 elsewhere
    ks = _profile_channels(mu, sig, axis, xp)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        u = xp.asarray(axis.u_orig[ks])[:, None]
        du = xp.asarray(axis.du_orig[ks])[:, None]
        ks = xp.asarray(ks)  # device indices for the device arrays
        used_k, yv_k = used[ks], yv[ks]
        z = (u - mu) / sig
        z2 = z * z
        g = xp.where(used_k & (z2 < _Z2_MAX), xp.exp(-0.5 * xp.minimum(z2, _Z2_MAX)), 0.0)
        line = used_k & (z2 <= FWHM_PER_SIGMA * FWHM_PER_SIGMA)  # |u - mu| <= FWHM
        flux = xp.where(line, yv_k * du, 0.0).sum(axis=0)
        flux_n = xp.sqrt(xp.where(line, du * du, 0.0).sum(axis=0))
        yv[ks] = yv_k - amp * g  # the residuals
        s = MAD_TO_SIGMA * row_median_mad(yv.T, xp, valid=used.T, min_count=2)[1]
        q = g * g
        sk = [q.sum(axis=0)]
        for _ in range(4):  # S_k = sum g^2 z^k, k = 1..4
            q *= z
            sk.append(q.sum(axis=0))
        s0, s1, s2, s3, s4 = sk
        minor = s2 * s4 - s3 * s3
        det = s0 * minor - s1 * (s1 * s4 - s3 * s2) + s2 * (s1 * s3 - s2 * s2)
        sigma_a = s * xp.sqrt(minor / det)
        inside = (mu >= axis.u[0]) & (mu <= axis.u[-1]) & (sig >= axis.sig_min) & (sig <= axis.sig_max)
        detected = (amp >= PEAK_SNR * s) & (flux >= DETECT_SNR * s * flux_n) & (flux > 0)
        constrained = (det > 0) & (minor > 0) & (amp >= AMP_SNR * sigma_a)
    return xp.isfinite(amp) & xp.isfinite(s) & inside & detected & constrained


def _profile_channels(mu: Any, sig: Any, axis: SpectralAxis, xp: Any) -> np.ndarray:
    """Host indices of the channels with ``|u - mu| < sqrt(Z2_MAX) |sigma|`` for some fitted pixel.

    Outside them every pixel's profile is exactly 0 by the rule of :func:`significant`, so
    restricting the profile sums to them changes no result (their terms are exact zeros);
    two numbers per chunk come back from the device (``# sync``).
    """
    reach = np.sqrt(_Z2_MAX) * sig
    fitted = xp.isfinite(mu) & xp.isfinite(reach)
    lo = float(xp.where(fitted, mu - reach, xp.inf).min())  # sync
    hi = float(xp.where(fitted, mu + reach, -xp.inf).max())  # sync
    return np.flatnonzero((axis.u_orig > lo) & (axis.u_orig < hi))


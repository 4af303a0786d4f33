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

from kernel_common.constants import FWHM_PER_SIGMA

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

"""Smoothing kernels of the smooth-and-clip mask (SoFiA-2's source finder), built once for both trees.

- :func:`gaussian_kernel_2d`: a normalised 2-D elliptical Gaussian from its covariance in pixels,
  ``K(p) ∝ exp(-½ pᵀ C⁻¹ p)`` with ``p = (dx, dy)``, sampled on the integer offsets within
  ``truncate`` standard deviations of the widest axis (odd size, centred).
- :func:`spectral_window`: the normalised weights of an ``n``-channel boxcar (``1/n``) or Hann
  window (``w_k ∝ sin²(π (k+1)/(n+1))``, ``k = 0 … n−1``: the ``n`` non-zero samples of a Hann
  window, SoFiA-2's definition).
- :func:`beam_covariance_pixels`: the covariance in pixels of a Gaussian given by its FWHMs and
  position angle on the sky, through the celestial WCS's pixel-scale matrix.

NumPy only (the kernels move the small arrays to the device themselves).
"""

from __future__ import annotations

import math

import numpy as np

from kernel_common.constants import FWHM_PER_SIGMA

WINDOWS = ("boxcar", "hann")


def gaussian_kernel_2d(cov: tuple[float, float, float], truncate: float = 4.0) -> np.ndarray:
    """Normalised elliptical Gaussian ``(ky, kx)`` float64 kernel (sums to 1).

    Parameters
    ----------
    cov : (cxx, cxy, cyy)
        Covariance of the Gaussian in pixels² (x = column, y = row offsets); positive definite.
    truncate : float
        Half-size of the kernel in standard deviations of the widest principal axis.

    Returns
    -------
    numpy.ndarray
        ``(2r+1, 2r+1)`` with ``r = ceil(truncate·√λ_max)``; ``K[j, i]`` at ``dy = j−r``, ``dx = i−r``.
    """
    cxx, cxy, cyy = (float(c) for c in cov)
    det = cxx * cyy - cxy * cxy
    if not (cxx > 0 and cyy > 0 and det > 0):
        raise ValueError("the smoothing covariance must be positive definite")
    lam = 0.5 * (cxx + cyy) + math.sqrt(0.25 * (cxx - cyy) ** 2 + cxy * cxy)
    r = max(1, math.ceil(truncate * math.sqrt(lam)))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    q = (cyy * dx * dx - 2.0 * cxy * dx * dy + cxx * dy * dy) / det
    k = np.exp(-0.5 * q)
    return k / k.sum()


def spectral_window(n: int, window: str = "boxcar") -> np.ndarray:
    """Normalised ``n``-channel window (``n`` odd ≥ 1): ``boxcar`` or ``hann`` (see the module docstring)."""
    if n < 1 or n % 2 == 0:
        raise ValueError("a spectral smoothing width must be an odd number of channels")
    if window == "boxcar":
        w = np.ones(n)
    elif window == "hann":
        w = np.sin(np.pi * np.arange(1, n + 1) / (n + 1)) ** 2
    else:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
    return w / w.sum()


def beam_covariance_pixels(fwhm_major: float, fwhm_minor: float, pa_deg: float,
                           pixel_matrix: np.ndarray) -> tuple[float, float, float]:
    """Pixel covariance ``(cxx, cxy, cyy)`` of a sky Gaussian.

    Parameters
    ----------
    fwhm_major, fwhm_minor : float
        FWHMs in degrees on the sky.
    pa_deg : float
        Position angle of the major axis, degrees east of north (the FITS ``BPA`` convention).
    pixel_matrix : (2, 2) array
        The celestial WCS's pixel-scale matrix ``M`` (degrees per pixel): intermediate world
        offsets ``(ξ, η) = M · (dx, dy)``, ``ξ`` along longitude (positive east), ``η`` north.

    Notes
    -----
    In world offsets the covariance is ``C_w = R diag(σ_maj², σ_min²) Rᵀ`` with the major axis along
    ``(sin PA, cos PA)`` and ``σ = FWHM / (2√(2 ln 2))``; in pixels ``C_p = M⁻¹ C_w M⁻ᵀ``.
    """
    s_maj, s_min = fwhm_major / FWHM_PER_SIGMA, fwhm_minor / FWHM_PER_SIGMA
    pa = math.radians(pa_deg)
    u = np.array([math.sin(pa), math.cos(pa)])
    v = np.array([math.cos(pa), -math.sin(pa)])
    cw = s_maj ** 2 * np.outer(u, u) + s_min ** 2 * np.outer(v, v)
    minv = np.linalg.inv(np.asarray(pixel_matrix, dtype=np.float64))
    cp = minv @ cw @ minv.T
    return float(cp[0, 0]), float(cp[0, 1]), float(cp[1, 1])

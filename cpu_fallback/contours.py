"""Contour levels and paths of an image plane (``imview``), NumPy/SciPy/scikit-image reference.

Backs the ``imview`` task of ``POST /api/visualization/js9/analysis``:

1. :func:`smooth_image` — optional Gaussian smoothing (``scipy.ndimage.gaussian_filter``,
   standard deviation ``sigma`` pixels, ``truncate = 4``, ``mode = "reflect"``). Blank pixels
   are handled by normalised convolution, ``S = G∗(x·w) / G∗w`` with ``w = 1`` on finite pixels
   and 0 elsewhere, and stay blank; an image without blanks is smoothed directly (identical to
   ``gaussian_filter``).
2. :func:`contour_levels` — ``n`` linear levels strictly inside the finite data range,
   ``lᵢ = min + i·(max − min)/(n + 1)``, ``i = 1..n`` (``numpy.linspace(min, max, n + 2)[1:-1]``).
3. :func:`trace_contours` — marching squares (``skimage.measure.find_contours``) per level, blank
   pixels masked out; each path is an ``(m, 2)`` float64 array of ``(row, column)`` 0-based pixel
   coordinates, closed when its first and last vertices coincide.

Chunking: none (one plane at a time; the smoothing needs the whole plane).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Array type of this tree (``gpu_kernels.contours`` names ``cupy.ndarray`` the same way).
_Array = np.ndarray

#: Gaussian kernel radius in standard deviations (scipy's default).
TRUNCATE = 4.0


def smooth_image(image: _Array, *, sigma: float) -> _Array:
    """Gaussian-smoothed copy of a plane, blank pixels excluded and kept blank.

    Parameters
    ----------
    image : numpy.ndarray
        ``(y, x)`` float32 plane, data units. NaN/±inf are blank.
    sigma : float
        Gaussian standard deviation in pixels; ``<= 0`` returns the plane unsmoothed.

    Returns
    -------
    numpy.ndarray
        ``(y, x)`` float64, NaN on blank pixels.
    """
    from scipy.ndimage import gaussian_filter

    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"smooth_image expects a (y, x) plane, got shape {a.shape}")
    finite = np.isfinite(a)
    if sigma <= 0:
        return np.where(finite, a, np.nan)
    if finite.all():
        return gaussian_filter(a, sigma, mode="reflect", truncate=TRUNCATE)
    num = gaussian_filter(np.where(finite, a, 0.0), sigma, mode="reflect", truncate=TRUNCATE)
    den = gaussian_filter(finite.astype(np.float64), sigma, mode="reflect", truncate=TRUNCATE)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~finite] = np.nan
    return out


def contour_levels(image: _Array, *, n_levels: int) -> _Array:
    """``n_levels`` linear contour levels strictly inside the finite range of ``image``.

    Returns
    -------
    numpy.ndarray
        ``(n_levels,)`` float64 levels (empty when the plane has no finite pixel or is flat).
    """
    a = np.asarray(image)
    finite = a[np.isfinite(a)]
    if finite.size == 0 or n_levels < 1:
        return np.empty(0, dtype=np.float64)
    lo, hi = float(finite.min()), float(finite.max())
    if not hi > lo:
        return np.empty(0, dtype=np.float64)
    return np.linspace(lo, hi, int(n_levels) + 2)[1:-1]


def trace_contours(image: _Array, *, levels: Sequence[float]) -> list[list[Any]]:
    """Marching-squares iso-lines of ``image`` at each level.

    Parameters
    ----------
    image : numpy.ndarray
        ``(y, x)`` plane (usually from :func:`smooth_image`); NaN pixels are masked out.
    levels : sequence of float
        Contour levels, data units.

    Returns
    -------
    list of list of numpy.ndarray
        Per level, the paths as ``(m, 2)`` float64 ``(row, column)`` arrays (0-based pixels).
    """
    from skimage.measure import find_contours

    a = np.asarray(image, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"trace_contours expects a (y, x) plane, got shape {a.shape}")
    finite = np.isfinite(a)
    mask = None if finite.all() else finite
    filled = a if mask is None else np.where(finite, a, 0.0)
    if min(a.shape) < 2:
        return [[] for _ in levels]
    return [list(find_contours(filled, float(level), mask=mask)) for level in levels]

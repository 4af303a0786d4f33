"""Contour levels and paths of an image plane (``imview``) on the GPU, with an honest CPU step.

Same public functions and signatures as :mod:`cpu_fallback.contours` (the reference, which
documents the definitions).

- :func:`smooth_image` and :func:`contour_levels` run on the device
  (``cupyx.scipy.ndimage.gaussian_filter``, same kernel, truncation and boundary mode as SciPy).
- :func:`trace_contours` is **a CPU fallback, declared as such**: marching squares is
  branchy, output-size-dependent work that neither CuPy nor cuCIM provides (cuCIM has no
  ``find_contours``); the smoothed plane is copied to the host (``# sync``) and traced with
  ``skimage.measure.find_contours``, exactly as the CPU tree does. The paths it returns are
  host NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.compute.contract import Case, Tolerance

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-9, atol=1e-12)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("smooth_image", ("plane",), {"sigma": 1.5}),
    Case("contour_levels", ("mean_plane",), {"n_levels": 4}),
    Case("trace_contours", ("mean_plane",), {"levels": [0.3, 0.6]}),
)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

#: Gaussian kernel radius in standard deviations (scipy's default).
TRUNCATE = 4.0


def smooth_image(image: _Array, *, sigma: float) -> _Array:
    """Gaussian-smoothed copy of a plane on the device, blank pixels excluded and kept blank.

    Parameters
    ----------
    image : cupy.ndarray
        ``(y, x)`` float32 plane, data units. NaN/±inf are blank.
    sigma : float
        Gaussian standard deviation in pixels; ``<= 0`` returns the plane unsmoothed.

    Returns
    -------
    cupy.ndarray
        ``(y, x)`` float64, NaN on blank pixels.
    """
    import cupy as cp
    from cupyx.scipy.ndimage import gaussian_filter

    a = cp.asarray(image, dtype=cp.float64)
    if a.ndim != 2:
        raise ValueError(f"smooth_image expects a (y, x) plane, got shape {a.shape}")
    finite = cp.isfinite(a)
    if sigma <= 0:
        return cp.where(finite, a, cp.nan)
    if bool(finite.all()):  # sync
        return gaussian_filter(a, sigma, mode="reflect", truncate=TRUNCATE)
    num = gaussian_filter(cp.where(finite, a, 0.0), sigma, mode="reflect", truncate=TRUNCATE)
    den = gaussian_filter(finite.astype(cp.float64), sigma, mode="reflect", truncate=TRUNCATE)
    out = num / den
    out[~finite] = cp.nan
    return out


def contour_levels(image: _Array, *, n_levels: int) -> _Array:
    """``n_levels`` linear contour levels strictly inside the finite range of ``image`` (device array)."""
    import cupy as cp

    a = cp.asarray(image)
    finite = a[cp.isfinite(a)]
    if finite.size == 0 or n_levels < 1:
        return cp.empty(0, dtype=cp.float64)
    lo, hi = float(finite.min()), float(finite.max())  # sync
    if not hi > lo:
        return cp.empty(0, dtype=cp.float64)
    return cp.linspace(lo, hi, int(n_levels) + 2)[1:-1]


def trace_contours(image: _Array, *, levels: Sequence[float]) -> list[list[Any]]:
    """Marching-squares iso-lines per level — CPU fallback (scikit-image) on the host copy of ``image``.

    Returns
    -------
    list of list of numpy.ndarray
        Per level, host ``(m, 2)`` float64 ``(row, column)`` arrays (0-based pixels).
    """
    import cupy as cp

    from cpu_fallback.contours import trace_contours as cpu_trace

    host = cp.asnumpy(cp.asarray(image, dtype=cp.float64))  # sync: the declared CPU step
    return cpu_trace(host, levels=[float(v) for v in levels])

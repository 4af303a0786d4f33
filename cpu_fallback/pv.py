"""Position-velocity cut on the CPU: box sampling across a path (NumPy reference).

Backs ``POST /v1/cube/pv`` (client contract §4.5). The path geometry (samples, unit normals,
positions) comes from :func:`app.services.pv_path.polyline_samples`; this kernel only gathers
cube values.

Pixel rounding is **round half away from zero** (C ``round``): ``r = trunc(p)``, plus
``sign(p)`` when ``|p - trunc(p)| >= 0.5``. Both steps are exact in floating point, so the GPU
kernel (same formula in CUDA) picks the same pixels. Half-away rather than NumPy's ``rint``
(half to even) because ``rint`` makes an even ``width_pixels`` collapse onto one pixel at some
samples and skip a pixel at others (``1.5, 2.5 -> 2, 2`` but ``2.5, 3.5 -> 2, 4``).
"""

from __future__ import annotations

import numpy as np

#: Array type of this tree (the GPU tree names ``cupy.ndarray`` the same way, so the
#: ``inspect.signature`` of every public function is identical in both trees).
_Array = np.ndarray


def _round_half_away(p: np.ndarray) -> np.ndarray:
    """Round to the nearest integer, halves away from zero; NaN stays NaN (exact)."""
    t = np.trunc(p)
    return t + np.where(np.abs(p - t) >= 0.5, np.sign(p), 0.0)


def pv_box_sample(
    cube: _Array,
    sample_x: _Array,
    sample_y: _Array,
    normal_x: _Array,
    normal_y: _Array,
    *,
    width_pixels: int,
) -> _Array:
    """Mean of ``width_pixels`` pixels across the path at every sample, for every channel.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(spectral, y, x)`` cube, data units; NaN/±inf are blank. May be a memmap (only the
        gathered pixels of each plane are read).
    sample_x, sample_y : numpy.ndarray
        ``(ns,)`` float64 sample positions in pixels (x = column, y = row, 0-based).
    normal_x, normal_y : numpy.ndarray
        ``(ns,)`` float64 unit normal to the path at each sample (pixels).
    width_pixels : int
        Number ``w >= 1`` of pixels taken across the path.

    Returns
    -------
    numpy.ndarray
        ``(nz, ns)`` float32, row = channel, column = sample, data units:

        ``PV[z, s] = mean{ cube[z, Y_k, X_k] : 0 <= k < w, in bounds, finite }`` with
        ``X_k = round(sample_x[s] + (k - (w-1)/2) * normal_x[s])`` (likewise ``Y_k``), rounding
        half away from zero. Offsets falling outside the image are ignored; NaN where no pixel
        is usable. Sums are accumulated in float64 over ``k = 0 .. w-1`` in order.

    Raises
    ------
    ValueError
        On a non-3-D cube, mismatched sample arrays or ``width_pixels < 1``.
    """
    a = np.asarray(cube)
    sx, sy, nx_, ny_ = _check_inputs(a, sample_x, sample_y, normal_x, normal_y, width_pixels)
    nz, ny, nx = a.shape
    w = int(width_pixels)
    total = np.zeros((nz, sx.size), dtype=np.float64)
    count = np.zeros((nz, sx.size), dtype=np.int64)
    half = (w - 1) * 0.5
    for k in range(w):
        off = float(k) - half
        rx = _round_half_away(sx + off * nx_)
        ry = _round_half_away(sy + off * ny_)
        inside = (rx >= 0) & (rx <= nx - 1) & (ry >= 0) & (ry <= ny - 1)
        if not inside.any():
            continue
        cols = np.nonzero(inside)[0]
        vals = np.asarray(a[:, ry[cols].astype(np.intp), rx[cols].astype(np.intp)], dtype=np.float64)
        good = np.isfinite(vals)
        total[:, cols] += np.where(good, vals, 0.0)
        count[:, cols] += good
    out = np.full((nz, sx.size), np.nan, dtype=np.float32)
    has = count > 0
    out[has] = (total[has] / count[has]).astype(np.float32)
    return out


def _check_inputs(
    cube: np.ndarray,
    sample_x: np.ndarray,
    sample_y: np.ndarray,
    normal_x: np.ndarray,
    normal_y: np.ndarray,
    width_pixels: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if cube.ndim != 3:
        raise ValueError(f"pv_box_sample expects a (spectral, y, x) cube, got shape {cube.shape}")
    if isinstance(width_pixels, bool) or not isinstance(width_pixels, int | np.integer) or width_pixels < 1:
        raise ValueError(f"width_pixels must be an integer >= 1, got {width_pixels!r}")
    arrs = [np.asarray(v, dtype=np.float64) for v in (sample_x, sample_y, normal_x, normal_y)]
    if any(v.ndim != 1 or v.shape != arrs[0].shape for v in arrs):
        raise ValueError("sample_x, sample_y, normal_x, normal_y must be 1-D arrays of one length")
    return arrs[0], arrs[1], arrs[2], arrs[3]

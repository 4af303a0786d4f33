"""Spectral stacking on the CPU (NumPy reference): spatial-mean spectra and their combination.

Backs ``POST /v1/spectral/stack`` (client contract §6.4). Spectrum mode: each cube is collapsed
to its spatial-mean spectrum over its finite pixels,

    ``S_c = (sum_{p finite} I_pc) / n_c``  (NaN where ``n_c = 0``),

with the reduction exposed as ``mean_spectrum_partial`` -> ``mean_spectrum_combine`` ->
``mean_spectrum_finalize`` so y-slab chunks give the whole-cube result. The partial also
carries the per-channel maximum, so the cube's peak intensity (``peak`` weighting) comes from
the same single pass. The N spectra are then combined channel by channel by
:func:`combine_spectra`; :func:`stack_weights` gives the ``weight_by`` weights. Cube mode
(:func:`stack_cubes`) combines aligned cubes voxel by voxel with the same three methods.

NaN handling everywhere: a non-finite value is left out of its channel (or voxel); a channel
(voxel) with no finite value from any cube is NaN. All sums are float64; maps and spectra
returned to clients are float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernel_common.constants import MAD_TO_SIGMA
from kernel_common.robust import row_median, row_median_mad

_Array = np.ndarray
_METHODS = ("mean", "median", "weighted_mean")
_WEIGHT_BY = ("uniform", "rms", "peak")


def mean_spectrum_partial(cube: _Array) -> _Array:
    """Per-channel partial sums of a cube (or of a y-slab of it).

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities; non-finite values are blank.

    Returns
    -------
    numpy.ndarray
        float64 ``(3, nz)``: rows ``sum I``, ``n`` (count of finite pixels) and ``max I``
        (``-inf`` where none) over the finite pixels of each channel.
    """
    a = np.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    flat = a.reshape(a.shape[0], -1)
    out = np.empty((3, a.shape[0]))
    out[2] = -np.inf
    for z in range(a.shape[0]):  # one channel plane at a time: no cube-sized temporaries
        plane = np.asarray(flat[z], dtype=np.float64)
        fin = np.isfinite(plane)
        vals = plane[fin]
        out[0, z], out[1, z] = vals.sum(), vals.size
        if vals.size:
            out[2, z] = vals.max()
    return out


def mean_spectrum_combine(a: _Array, b: _Array) -> _Array:
    """Combine two partials of :func:`mean_spectrum_partial` (sums add, maxima take the max)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.stack([a[0] + b[0], a[1] + b[1], np.maximum(a[2], b[2])])


def mean_spectrum_finalize(partial: _Array) -> tuple[_Array, _Array]:
    """Spatial-mean spectrum and peak intensity from a (combined) partial.

    Returns
    -------
    spectrum : numpy.ndarray
        float64 ``(nz,)`` ``sum I / n`` per channel, NaN where ``n = 0``; data units.
    peak : numpy.ndarray
        float64 0-d: the maximum finite voxel of the cube (NaN if it has none); data units.
    """
    p = np.asarray(partial, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        spec = np.where(p[1] > 0, p[0] / p[1], np.nan)
    top = p[2].max(initial=-np.inf)
    return spec, np.asarray(top if np.isfinite(top) else np.nan)


def stack_weights(spectra: _Array, peaks: _Array, *, weight_by: str = "uniform") -> _Array:
    """Per-cube weights for ``weighted_mean``.

    Parameters
    ----------
    spectra : numpy.ndarray
        ``(n, nz)`` spatial-mean spectra (NaN = blank channel).
    peaks : numpy.ndarray
        ``(n,)`` peak intensity of each cube (from :func:`mean_spectrum_finalize`).
    weight_by : {"uniform", "rms", "peak"}, optional
        ``uniform``: ``w = 1``. ``rms``: ``w = 1 / sigma^2`` with
        ``sigma = 1.4826 * MAD`` of the finite channels of the cube's spectrum (the line
        occupies a minority of channels, so the MAD measures the spectrum's noise).
        ``peak``: ``w = peak``. Default ``"uniform"``.

    Returns
    -------
    numpy.ndarray
        float64 ``(n,)`` weights; NaN or inf where undefined (``sigma = 0`` or no finite
        channel) -- :func:`combine_spectra` rejects those.
    """
    s = np.asarray(spectra, dtype=np.float64)
    if weight_by == "uniform":
        return np.ones(s.shape[0])
    if weight_by == "peak":
        return np.asarray(peaks, dtype=np.float64).reshape(s.shape[0]).copy()
    if weight_by != "rms":
        raise ValueError(f"weight_by must be one of {_WEIGHT_BY}, got {weight_by!r}")
    sigma = MAD_TO_SIGMA * row_median_mad(s, np)[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 / (sigma * sigma)


def combine_spectra(spectra: _Array, *, method: str = "mean", weights: _Array | None = None) -> _Array:
    """Combine N spectra channel by channel.

    Parameters
    ----------
    spectra : numpy.ndarray
        ``(n, nz)`` spectra (NaN = blank channel of that cube).
    method : {"mean", "median", "weighted_mean"}, optional
        ``mean``: ``sum_i S_ic / m_c``; ``median``: median of the ``m_c`` finite ``S_ic``
        (mean of the two middle values for even ``m_c``); ``weighted_mean``:
        ``sum_i w_i S_ic / sum_i w_i`` over the cubes finite in channel ``c``. Default ``mean``.
    weights : numpy.ndarray, optional
        ``(n,)`` finite, non-negative weights (required for ``weighted_mean``, else ignored).

    Returns
    -------
    numpy.ndarray
        float32 ``(nz,)``; NaN where no cube is finite (or the finite weights sum to 0).

    Raises
    ------
    ValueError
        Unknown method; missing, wrongly sized, negative, non-finite or all-zero weights.
    """
    s = np.asarray(spectra, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"spectra must be (n, nz), got shape {s.shape}")
    return _combine(s, method, weights).astype(np.float32)


def stack_cubes(cubes: Sequence[_Array], *, method: str = "mean", weights: _Array | None = None) -> _Array:
    """Voxel-by-voxel stack of aligned, equally shaped cubes (cube mode).

    Parameters
    ----------
    cubes : sequence of numpy.ndarray
        N ``(nz, ny, nx)`` cubes (or y-slabs of them) of one shape; non-finite = blank.
    method, weights
        As for :func:`combine_spectra`, applied to every voxel across the N cubes.

    Returns
    -------
    numpy.ndarray
        float32 ``(nz, ny, nx)``; NaN where no cube has a finite voxel.
    """
    arrs = [np.asarray(c) for c in cubes]
    if len(arrs) < 1 or any(c.shape != arrs[0].shape for c in arrs) or arrs[0].ndim != 3:
        raise ValueError(f"need equally shaped (spectral, y, x) cubes, got {[c.shape for c in arrs]}")
    nz = arrs[0].shape[0]
    out = np.empty(arrs[0].shape, dtype=np.float32)
    for z in range(nz):  # one channel plane at a time
        planes = np.stack([np.asarray(c[z], dtype=np.float64).ravel() for c in arrs])
        out[z] = _combine(planes, method, weights).reshape(arrs[0].shape[1:])
    return out


def _combine(s: np.ndarray, method: str, weights) -> np.ndarray:
    """Combine rows of ``s`` (n, m) column by column, NaN-aware; float64 (m,)."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    fin = np.isfinite(s)
    cnt = fin.sum(axis=0)
    v = np.where(fin, s, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        if method == "mean":
            return np.where(cnt > 0, v.sum(axis=0) / cnt, np.nan)
        if method == "median":
            return row_median(s.T, np, valid=fin.T)
        w = _check_weights(weights, s.shape[0])
        wsum = (fin * w[:, None]).sum(axis=0)
        return np.where(wsum > 0, (v * w[:, None]).sum(axis=0) / wsum, np.nan)


def _check_weights(weights, n: int) -> np.ndarray:
    if weights is None:
        raise ValueError("weighted_mean needs weights (one per cube)")
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size != n:
        raise ValueError(f"got {w.size} weights for {n} cubes")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise ValueError(f"weights must be finite, non-negative and not all zero: {w.tolist()}")
    return w

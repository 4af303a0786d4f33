"""Spectral stacking on the GPU (CuPy): spatial-mean spectra and their combination.

Same public functions and signatures as :mod:`cpu_fallback.stacking`, whose module notes define
the partial/combine/finalize reduction, the three combination methods, the weights and the NaN
rules. Arrays in and out are CuPy arrays on the current device; CuPy is imported inside the
functions. The partial is one fused pass per slab of channels (masked float64 sum, finite
count and maximum); the combinations are the CPU formulas as CuPy array code. Sums may differ
from the CPU's in the last bits (summation order), so parity is to ``rtol ~ 1e-12``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.constants import MAD_TO_SIGMA
from kernel_common.robust import row_median, row_median_mad

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-6)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("mean_spectrum_partial", ("cube",)),
    Case("combine_spectra", ("spectra",), {"method": "median"}),
    Case("stack_weights", ("spectra", "spectra_peaks"), {"weight_by": "rms"}),
    Case("stack_cubes", ("cube_pair",), {"method": "mean"}),
)

_Array = Any
_METHODS = ("mean", "median", "weighted_mean")
_WEIGHT_BY = ("uniform", "rms", "peak")
#: float32 voxels per slab of channels in ``mean_spectrum_partial`` and ``stack_cubes``.
_SLAB_ELEMENTS = 1 << 26


def mean_spectrum_partial(cube: _Array) -> _Array:
    """Per-channel ``[sum I, n, max I]`` (float64 ``(3, nz)``) over finite pixels, on the device."""
    import cupy as cp

    a = cp.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    flat = a.reshape(nz, npix)
    out = cp.empty((3, nz))
    rows = max(1, _SLAB_ELEMENTS // max(1, npix))
    for z0 in range(0, nz, rows):
        slab = flat[z0 : z0 + rows]
        fin = cp.isfinite(slab)
        out[0, z0 : z0 + rows] = cp.where(fin, slab, 0).astype(cp.float64).sum(axis=1)
        out[1, z0 : z0 + rows] = fin.sum(axis=1)
        # no ``initial=`` in CuPy's max: an empty plane (npix == 0) is handled apart
        out[2, z0 : z0 + rows] = cp.where(fin, slab, -cp.inf).max(axis=1) if npix else -cp.inf
    return out


def mean_spectrum_combine(a: _Array, b: _Array) -> _Array:
    """Combine two partials (sums add, maxima take the max), on the device."""
    import cupy as cp

    a, b = cp.asarray(a, dtype=cp.float64), cp.asarray(b, dtype=cp.float64)
    return cp.stack([a[0] + b[0], a[1] + b[1], cp.maximum(a[2], b[2])])


def mean_spectrum_finalize(partial: _Array) -> tuple[_Array, _Array]:
    """Spatial-mean spectrum (float64 ``(nz,)``) and peak (float64 0-d, NaN if none), on the device."""
    import cupy as cp

    p = cp.asarray(partial, dtype=cp.float64)
    spec = cp.where(p[1] > 0, p[0] / cp.where(p[1] > 0, p[1], 1.0), cp.nan)
    if p.shape[1] == 0:
        return spec, cp.asarray(cp.nan)
    top = p[2].max()
    return spec, cp.where(cp.isfinite(top), top, cp.nan)


def stack_weights(spectra: _Array, peaks: _Array, *, weight_by: str = "uniform") -> _Array:
    """Per-cube weights (float64 ``(n,)``): 1, ``1/sigma^2`` or the peak; see the CPU twin."""
    import cupy as cp

    s = cp.asarray(spectra, dtype=cp.float64)
    if weight_by == "uniform":
        return cp.ones(s.shape[0])
    if weight_by == "peak":
        return cp.asarray(peaks, dtype=cp.float64).reshape(s.shape[0]).copy()
    if weight_by != "rms":
        raise ValueError(f"weight_by must be one of {_WEIGHT_BY}, got {weight_by!r}")
    sigma = MAD_TO_SIGMA * row_median_mad(s, cp)[1]
    return 1.0 / (sigma * sigma)


def combine_spectra(spectra: _Array, *, method: str = "mean", weights: _Array | None = None) -> _Array:
    """Combine N spectra channel by channel (float32 ``(nz,)``), on the device; see the CPU twin."""
    import cupy as cp

    s = cp.asarray(spectra, dtype=cp.float64)
    if s.ndim != 2:
        raise ValueError(f"spectra must be (n, nz), got shape {s.shape}")
    w = _check_weights(weights, s.shape[0]) if method == "weighted_mean" else None
    return _combine(s, method, w).astype(cp.float32)


def stack_cubes(cubes: Sequence[_Array], *, method: str = "mean", weights: _Array | None = None) -> _Array:
    """Voxel-by-voxel stack of aligned cubes (float32 ``(nz, ny, nx)``), on the device."""
    import cupy as cp

    arrs = [cp.asarray(c) for c in cubes]
    if len(arrs) < 1 or any(c.shape != arrs[0].shape for c in arrs) or arrs[0].ndim != 3:
        raise ValueError(f"need equally shaped (spectral, y, x) cubes, got {[c.shape for c in arrs]}")
    w = _check_weights(weights, len(arrs)) if method == "weighted_mean" else None
    nz, ny, nx = arrs[0].shape
    out = cp.empty((nz, ny, nx), dtype=cp.float32)
    rows = max(1, _SLAB_ELEMENTS // max(1, len(arrs) * ny * nx))
    for z0 in range(0, nz, rows):
        planes = cp.stack([c[z0 : z0 + rows].astype(cp.float64).ravel() for c in arrs])
        out[z0 : z0 + rows] = _combine(planes, method, w).reshape(-1, ny, nx)
    return out


def _combine(s: Any, method: str, w: Any) -> Any:
    """Combine rows of ``s`` (n, m) column by column, NaN-aware; float64 (m,)."""
    import cupy as cp

    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    fin = cp.isfinite(s)
    cnt = fin.sum(axis=0)
    v = cp.where(fin, s, 0.0)
    if method == "mean":
        return cp.where(cnt > 0, v.sum(axis=0) / cp.maximum(cnt, 1), cp.nan)
    if method == "median":
        return row_median(s.T, cp, valid=fin.T)
    wsum = (fin * w[:, None]).sum(axis=0)
    num = (v * w[:, None]).sum(axis=0)
    return cp.where(wsum > 0, num / cp.where(wsum > 0, wsum, 1.0), cp.nan)


def _check_weights(weights: Any, n: int) -> Any:
    """Validated float64 device weights; the checks read the ``n`` weights back (sync)."""
    import cupy as cp
    import numpy as np

    if weights is None:
        raise ValueError("weighted_mean needs weights (one per cube)")
    host = np.asarray(cp.asnumpy(weights), dtype=np.float64).ravel()  # sync (n values)
    if host.size != n:
        raise ValueError(f"got {host.size} weights for {n} cubes")
    if not np.all(np.isfinite(host)) or np.any(host < 0) or not np.any(host > 0):
        raise ValueError(f"weights must be finite, non-negative and not all zero: {host.tolist()}")
    return cp.asarray(host)

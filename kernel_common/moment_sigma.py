"""Propagated 1σ uncertainties of moments 0, 1 and 2, array-module generic (NumPy or CuPy).

Shared by :mod:`cpu_fallback.moment_errors` and :mod:`gpu_kernels.moment_errors`, which pass
their array module ``xp``; the formulas are documented in :mod:`cpu_fallback.moment_errors`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Spectra per work tile: float64 temporaries of ``nz × tile`` elements live at once.
TILE_ELEMENTS = 1 << 21


def check_inputs(cube: Any, coords: Any, widths: Any, noise: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate shapes on the host; return float64 ``(coords, |widths|, noise)`` of shape ``(nz,)``."""
    if getattr(cube, "ndim", 0) != 3 or not np.issubdtype(cube.dtype, np.floating):
        raise ValueError(f"expected a floating (spectral, y, x) cube, got {getattr(cube, 'shape', None)}")
    nz = cube.shape[0]
    v = np.asarray(coords, dtype=np.float64).reshape(-1)
    w = np.abs(np.asarray(widths, dtype=np.float64).reshape(-1))
    s = np.asarray(noise, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.full(nz, float(s[0]))
    if nz < 1 or v.shape != (nz,) or w.shape != (nz,) or s.shape != (nz,):
        raise ValueError(f"coords, widths and noise must have shape ({nz},) (noise may be a scalar)")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
        raise ValueError("coords and widths must be finite")
    if not np.all(np.isfinite(s) & (s >= 0)):
        raise ValueError("noise must be finite and >= 0 in every channel")
    return v, w, s


def sigma_tile(
    xp: Any, x: Any, u: Any, w: Any, s: Any, keep: Any, dispersion: bool,
) -> dict[int, Any]:
    """σ of moments 0, 1, 2 for a ``(nz, m)`` float64 tile ``x`` whose kept voxels are ``keep``.

    ``u`` are the centred coordinates, ``w = |Δv|`` and ``s`` the per-channel noise, all
    ``(nz, 1)`` float64. One pass over the tile as two matrix products of power sums:
    ``S_k = Σ_i I_i Δv_i u_i^k`` (k = 0…2, kept voxels) and ``A_k = Σ_i a_i u_i^k`` (k = 0…4) with
    ``a_i = (Δv_i σ_i)²`` over the kept channels. Then ``M0 = S_0``, ``M1 = S_1 / S_0``,
    ``V = S_2 / S_0 − M1²`` and the centred sums ``C_k = Σ a_i (u_i − M1)^k`` follow from the ``A_k``
    by the binomial expansion (``C_2 = A_2 − 2 M1 A_1 + M1² A_0``, ``C_4 = A_4 − 4 M1 A_3 + 6 M1² A_2 −
    4 M1³ A_1 + M1⁴ A_0``), so ``σ_M0 = √A_0``, ``σ_M1 = √C_2 / |M0|`` and
    ``σ_V = √(C_4 − 2 V C_2 + V² A_0) / |M0|`` (the formulas of :mod:`cpu_fallback.moment_errors`;
    rounding negatives clipped to 0; one kept voxel has ``d = 0``, so ``C_2`` and the σ_V sum are set
    to exactly 0 there). The coordinates are centred on the channel range, so for a line
    inside the range the float64 expansions lose about ``(range / line width)⁴`` ulps: far below
    float32, the precision of the answer.
    """
    xk = xp.where(keep, x, 0.0)
    kf = keep.astype(xp.float64)
    uu, ww = u[:, 0], w[:, 0]
    a = (ww * s[:, 0]) ** 2  # (Δv_i σ_i)²
    powers = xp.stack([xp.ones_like(uu), uu, uu * uu, uu ** 3, uu ** 4])  # (5, nz)
    sx = (powers[:3] * ww[None, :]) @ xk  # (3, m): Σ I Δv u^k
    sa = (powers * a[None, :]) @ kf  # (5, m): Σ a u^k
    n = xp.sum(keep, axis=0)
    s0 = sx[0]
    m1 = sx[1] / s0
    var = sx[2] / s0 - m1 * m1
    m2 = m1 * m1
    c2 = sa[2] - 2.0 * m1 * sa[1] + m2 * sa[0]
    c4 = sa[4] - 4.0 * m1 * sa[3] + 6.0 * m2 * sa[2] - 4.0 * m2 * m1 * sa[1] + m2 * m2 * sa[0]
    single = n == 1  # d = 0 exactly: the expansions would leave rounding, √ of which is not small
    c2 = xp.where(single, 0.0, xp.maximum(c2, 0.0))
    cv = xp.where(single, 0.0, xp.maximum(c4 - 2.0 * var * c2 + var * var * sa[0], 0.0))
    bad = (n == 0) | (s0 == 0) | ~xp.isfinite(s0)
    sig0 = xp.sqrt(sa[0])
    sig1 = xp.sqrt(c2) / xp.abs(s0)
    sigvar = xp.sqrt(cv) / xp.abs(s0)
    if dispersion:
        sig2 = sigvar / (2.0 * xp.sqrt(var))
        bad2 = bad | ~(var > 0)
    else:
        sig2, bad2 = sigvar, bad
    nan = xp.float64(np.nan)
    return {
        0: xp.where(n == 0, nan, sig0).astype(xp.float32),
        1: xp.where(bad, nan, sig1).astype(xp.float32),
        2: xp.where(bad2, nan, sig2).astype(xp.float32),
    }


def keep_mask(xp: Any, x: Any, threshold: float | None, include: tuple | None, exclude: tuple | None) -> Any:
    """Kept voxels: finite, ``x >= threshold``, inside ``include`` / outside ``exclude`` (ends kept)."""
    keep = xp.isfinite(x)
    if threshold is not None:
        keep &= x >= threshold
    if include is not None:
        keep &= (x >= include[0]) & (x <= include[1])
    if exclude is not None:
        keep &= (x <= exclude[0]) | (x >= exclude[1])
    return keep


def sigma_maps(
    xp: Any, cube: Any, coords: Any, widths: Any, noise: Any, *, threshold: float | None,
    include: Any, exclude: Any, dispersion: bool,
) -> dict[int, Any]:
    """Tile loop of :func:`sigma_tile` over the rows of ``cube`` (see the kernels' docstring)."""
    from kernel_common.moment_plans import pixel_range  # noqa: PLC0415

    v, w, s = check_inputs(cube, coords, widths, noise)
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError("threshold must be finite or None")
    inc, exc = pixel_range(include), pixel_range(exclude)
    if inc is not None and exc is not None:
        raise ValueError("only one of include or exclude may be given")
    nz, ny, nx = cube.shape
    u = xp.asarray((v - v.mean())[:, None])
    wd, sd = xp.asarray(w[:, None]), xp.asarray(s[:, None])
    out = {k: xp.empty((ny, nx), dtype=xp.float32) for k in (0, 1, 2)}
    rows = max(1, min(ny, TILE_ELEMENTS // max(1, nz * nx)))
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        x = xp.asarray(cube[:, y0:y1, :], dtype=xp.float64).reshape(nz, -1)
        keep = keep_mask(xp, x, threshold, inc, exc)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # NaN/inf masked below
            tile = sigma_tile(xp, x, u, wd, sd, keep, dispersion)
        for k, val in tile.items():
            out[k][y0:y1] = val.reshape(y1 - y0, nx)
    return out

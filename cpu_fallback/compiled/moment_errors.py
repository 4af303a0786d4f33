"""Propagated 1σ maps of moments 0, 1, 2, compiled: one pass over the cube (the CPU fast path).

Same formulas, masks and NaN rules as the oracle :func:`cpu_fallback.moment_errors.moment_sigma_maps`
(bettermoments, Teague 2019, RNAAS 3, 173; read its docstring). ``prange`` over rows ``y``; per row,
every channel's ``nx`` voxels are added into per-pixel float64 power sums of the kept voxels:
``S_k = Σ I Δv u^k`` (k = 0…2) and ``A_k = Σ a u^k`` (k = 0…4, ``a = (Δv σ)²``), ``u`` the
coordinates centred on the channel range, and the kept count. The σ maps then follow per pixel as in
:func:`kernel_common.moment_sigma.sigma_tile` (``M1 = S_1/S_0``, ``V = S_2/S_0 − M1²``, centred sums
of ``a`` by the binomial expansion). The cube is read once, in its stored float type, without
float64 temporaries of the tile. Sums differ from the oracle's only in float64 summation order:
the float32 answers agree to a few ulps (tests: ``tests/kernels/test_compiled_moment_errors.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, prange
from numpy.typing import NDArray

from cpu_fallback.compiled import runtime
from kernel_common.moment_plans import pixel_range
from kernel_common.moment_sigma import check_inputs

#: Pixel-range rules: none, ``lo <= I <= hi`` (include), ``I <= lo or I >= hi`` (exclude); end points kept.
_NO_RANGE, _INCLUDE, _EXCLUDE = 0, 1, 2


@njit(parallel=True, cache=True, fastmath=False)
def _kernel(cube, u, w, a, thr_on, thr, rule, lo, hi, dispersion, out):  # noqa: C901 - one fused pass
    nz, ny, nx = cube.shape
    for y in prange(ny):
        acc = np.zeros((8, nx))
        cnt = np.zeros(nx, np.int64)
        for z in range(nz):
            uz, wz, az = u[z], w[z], a[z]
            uz2 = uz * uz
            for x in range(nx):  # branch-free (selects), so the loop vectorises
                v = np.float64(cube[z, y, x])
                ok = np.isfinite(v)
                if thr_on:
                    ok = ok and v >= thr
                if rule == _INCLUDE:
                    ok = ok and v >= lo and v <= hi
                elif rule == _EXCLUDE:
                    ok = ok and (v <= lo or v >= hi)
                vw = v * wz if ok else 0.0
                ak = az if ok else 0.0
                acc[0, x] += vw
                acc[1, x] += vw * uz
                acc[2, x] += vw * uz2
                acc[3, x] += ak
                acc[4, x] += ak * uz
                acc[5, x] += ak * uz2
                acc[6, x] += ak * uz2 * uz
                acc[7, x] += ak * uz2 * uz2
                cnt[x] += 1 if ok else 0
        for x in range(nx):
            s0, a0 = acc[0, x], acc[3, x]
            if cnt[x] == 0:
                out[0, y, x] = np.nan
                out[1, y, x] = np.nan
                out[2, y, x] = np.nan
                continue
            out[0, y, x] = np.sqrt(a0)
            if s0 == 0.0 or not np.isfinite(s0):
                out[1, y, x] = np.nan
                out[2, y, x] = np.nan
                continue
            m1 = acc[1, x] / s0
            var = acc[2, x] / s0 - m1 * m1
            m2 = m1 * m1
            c2 = acc[5, x] - 2.0 * m1 * acc[4, x] + m2 * a0
            c4 = acc[7, x] - 4.0 * m1 * acc[6, x] + 6.0 * m2 * acc[5, x] - 4.0 * m2 * m1 * acc[4, x] + m2 * m2 * a0
            if cnt[x] == 1:  # d = 0 exactly (as the oracle)
                c2, cv = 0.0, 0.0
            else:
                c2 = max(c2, 0.0)
                cv = max(c4 - 2.0 * var * c2 + var * var * a0, 0.0)
            out[1, y, x] = np.sqrt(c2) / abs(s0)
            sigvar = np.sqrt(cv) / abs(s0)
            if dispersion:
                out[2, y, x] = sigvar / (2.0 * np.sqrt(var)) if var > 0 else np.nan
            else:
                out[2, y, x] = sigvar


def moment_sigma_maps(
    cube: np.ndarray,
    coords: np.ndarray,
    widths: np.ndarray,
    noise: np.ndarray | float,
    *,
    threshold: float | None = None,
    include: float | Sequence[float] | None = None,
    exclude: float | Sequence[float] | None = None,
    dispersion: bool = False,
) -> dict[int, NDArray[np.float32]]:
    """1σ maps of moments 0, 1 and 2 (as :func:`cpu_fallback.moment_errors.moment_sigma_maps`).

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` float32 or float64 intensities (any strides, native byte order), data units.
    coords, widths : array_like
        ``(nz,)`` spectral coordinates and channel widths (only ``|Δv|`` is used).
    noise : array_like or float
        Per-channel noise ``σ_i`` (data units), ``(nz,)`` or one value, finite and ``>= 0``.
    threshold, include, exclude, dispersion
        As the oracle: the API-reference threshold, CASA pixel ranges (at most one), ``√V`` for order 2.

    Returns
    -------
    dict of int to numpy.ndarray
        ``{0: σ_M0, 1: σ_M1, 2: σ_M2}``, ``(ny, nx)`` float32.

    Raises
    ------
    ValueError
        As the oracle.
    """
    v, w, s = check_inputs(cube, coords, widths, noise)
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError("threshold must be finite or None")
    inc, exc = pixel_range(include), pixel_range(exclude)
    if inc is not None and exc is not None:
        raise ValueError("only one of include or exclude may be given")
    rule, lo, hi = _NO_RANGE, 0.0, 0.0
    if inc is not None:
        rule, lo, hi = _INCLUDE, float(inc[0]), float(inc[1])
    elif exc is not None:
        rule, lo, hi = _EXCLUDE, float(exc[0]), float(exc[1])
    data = np.asarray(cube)
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    nz, ny, nx = data.shape
    out = np.empty((3, ny, nx), np.float32)
    if ny * nx:
        u = v - v.mean()
        with runtime.threads(data.size):
            _kernel(data, u, w, (w * s) ** 2, threshold is not None, 0.0 if threshold is None else float(threshold),
                    rule, lo, hi, bool(dispersion), out)
    return {0: out[0], 1: out[1], 2: out[2]}

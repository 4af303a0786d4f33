"""Spectral moments in the CASA ``immoments`` convention (CPU reference implementation).

CASA numbers its moments differently from our API reference (see :mod:`cpu_fallback.moments`).
This module reproduces CASA's *numbers*, including its single-precision quirks, so a client that
asks for the CASA convention gets what ``casatasks.immoments`` would write. Definitions follow
casa6 ``MomentClip::multiProcess`` and ``MomentCalcBase::setCalcMoments`` (basic and clip
methods; no smoothing, windowing or fitting). Over the ``n`` selected voxels ``x_i`` of a
spectrum, with coordinate ``v_i`` (e.g. km/s) and ``s0 = sum x``, ``s1 = sum x v``,
``s2 = sum x v^2``, ``sq = sum x^2`` accumulated in float64:

==== ============================== =========================================================
 -1  mean                           ``s0 / n``
  0  integrated                     ``s0 * |dv|`` (CASA: one increment, at the reference pixel)
  1  intensity-weighted coordinate  ``M1 = s1 / s0`` (blank if ``s0 == 0``)
  2  intensity-weighted dispersion  ``sqrt(|s2/s0 - M1*M1|)``, ``M1*M1`` in float32 (below)
  3  median of I                    casacore ``median``: element ``(n-1)//2`` of the sorted
                                    values; mean of the two middle ones only if n is even and
                                    ``n <= 100``
  4  median coordinate              coordinate of the first selected channel where the running
                                    sum ``c_0 = |x_0|, c_i = x_i + |c_{i-1}|`` (float32)
                                    reaches ``max(c)/2``
  5  standard deviation             ``sqrt((sq - s0^2/n) / (n-1))`` (n-1; blank if n < 2 or the
                                    float32 variance <= 0)
  6  rms                            ``sqrt(sq / n)``
  7  absolute mean deviation        ``sum |x_i - mean| / n`` (differences in float32)
  8  maximum                        ``max x``
  9  coordinate of the maximum      ``v`` at the first channel holding the maximum
 10  minimum                        ``min x``
 11  coordinate of the minimum      ``v`` at the first channel holding the minimum
==== ============================== =========================================================

Pixel selection (``includepix``/``excludepix``): a voxel is used if it is finite and, with
``include=[lo, hi]``, ``lo <= x <= hi``; with ``exclude=[lo, hi]``, ``x <= lo or x >= hi``
(the end points are kept, as in CASA). A single value ``v`` means ``[-|v|, |v|]``; the single
value ``-1`` (the task default) means no range, as in immoments. A spectrum with no selected
voxel is blank (NaN) in every moment.

CASA quirks reproduced (found in the casa6 sources and checked against CASA 6.7 on real data):

* Moment 2 is ``sqrt(s2/s0 - M1^2)`` with ``M1`` stored as float32 and ``M1*M1`` computed in
  float32 -- catastrophic cancellation for velocities ~1500 km/s: a spectrum whose flux sits in
  one channel gets 0.2-0.5 km/s instead of 0, and the value is blank (not 0) when the
  difference is exactly 0. Where moment 0 is not significant (no pixel range), moments 1 and 2
  are ratios of noise sums and can be anything (+-1e6 km/s); they are still CASA's numbers.
* Moment 4 needs an include or exclude range whose ends are both >= 0 or both <= 0 (CASA
  raises otherwise; so do we). Its running sum uses the *raw* (signed) current value plus the
  absolute previous sum, as CASA does.
* Moment 0 uses a single channel width; if ``widths`` are not all equal we integrate
  ``sum x_i |dv_i|`` instead (CASA would use the increment at the reference pixel).
* CASA treats only NaN (masked) voxels as blank; we also drop +-inf.
* Outputs are float32 (CASA's ``Float`` images); CASA's masked pixels are NaN here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

from kernel_common.moment_plans import plan_casa

#: Array type of this tree (the GPU tree uses ``cupy.ndarray``).
_Array = np.ndarray


#: Voxels per work tile (float64 temporaries of this size live at once).
_TILE_VOXELS = 1 << 21


def _median(x: NDArray[np.float64], keep: NDArray[np.bool_], n: NDArray[np.int64]) -> NDArray[np.float32]:
    """casacore ``median`` of the kept values of every column (float32 arithmetic)."""
    srt = np.sort(np.where(keep, x, np.inf).astype(np.float32), axis=0)
    n2 = np.maximum(n - 1, 0) // 2
    lo = np.take_along_axis(srt, n2[None, :], axis=0)[0]
    hi = np.take_along_axis(srt, np.minimum(n2 + 1, x.shape[0] - 1)[None, :], axis=0)[0]
    even = (n % 2 == 0) & (n <= 100)
    return np.where(even, (lo + hi) * np.float32(0.5), lo).astype(np.float32)


def _median_coord(x: NDArray[np.float64], keep: NDArray[np.bool_], v: NDArray[np.float64]) -> NDArray[np.float32]:
    """CASA's median coordinate: first kept channel where the running sum reaches half its max."""
    nz, npix = x.shape
    xs = x.astype(np.float32)
    run = np.full((nz, npix), -np.inf, dtype=np.float32)
    c = np.zeros(npix, dtype=np.float32)
    started = np.zeros(npix, dtype=bool)
    for k in range(nz):
        nxt = np.where(started, xs[k] + np.abs(c), np.abs(xs[k]))
        c = np.where(keep[k], nxt, c)
        started |= keep[k]
        run[k] = np.where(keep[k], c, -np.inf)
    half = np.max(run, axis=0) / np.float32(2.0)
    first = np.argmax(run >= half[None, :], axis=0)
    return v[first].astype(np.float32)


def _tile(
    x: NDArray[np.float64],
    moms: tuple[int, ...],
    v: NDArray[np.float64],
    width: float | None,
    w: NDArray[np.float64],
    rng: tuple | None,
    is_include: bool,
) -> dict[int, NDArray[np.float32]]:
    """All requested CASA moments for one ``(nz, npix)`` float64 tile."""
    keep = np.isfinite(x)
    if rng is not None:
        lo, hi = rng
        keep &= ((x >= lo) & (x <= hi)) if is_include else ((x <= lo) | (x >= hi))
    n = np.count_nonzero(keep, axis=0)
    x0 = np.where(keep, x, 0.0)
    s0 = np.add.reduce(x0, axis=0)
    sq = np.add.reduce(x0 * x0, axis=0)
    xv = x0 * v[:, None]
    s1 = np.add.reduce(xv, axis=0)
    s2 = np.add.reduce(xv * v[:, None], axis=0)
    out: dict[int, NDArray] = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        nn = np.maximum(n, 1)
        m1 = (s1 / s0).astype(np.float32)
        for m in moms:
            if m == -1:
                val, ok = s0 / nn, n > 0
            elif m == 0:
                val = s0 * width if width is not None else np.add.reduce(x0 * w[:, None], axis=0)
                ok = n > 0
            elif m == 1:
                val, ok = m1, s0 != 0
            elif m == 2:
                disp = np.abs((s2 / s0 - (m1 * m1).astype(np.float64)).astype(np.float32))
                val, ok = np.sqrt(disp), (s0 != 0) & (disp > 0)
            elif m == 3:
                val, ok = _median(x, keep, n), n > 0
            elif m == 4:
                val, ok = _median_coord(x, keep, v), n > 0
            elif m == 5:
                var = (sq - s0 * s0 / nn) / np.maximum(n - 1, 1)
                val, ok = np.sqrt(var), (n > 1) & (var.astype(np.float32) > 0)
            elif m == 6:
                val, ok = np.sqrt(sq / nn), n > 0
            elif m == 7:
                dev = np.abs(x.astype(np.float32) - (s0 / nn).astype(np.float32)[None, :])
                val = np.add.reduce(np.where(keep, dev, 0.0), axis=0, dtype=np.float64) / nn
                ok = n > 0
            elif m in (8, 9):
                i = np.argmax(np.where(keep, x, -np.inf), axis=0)
                val = x[i, np.arange(x.shape[1])] if m == 8 else v[i]
                ok = n > 0
            else:  # 10, 11
                i = np.argmin(np.where(keep, x, np.inf), axis=0)
                val = x[i, np.arange(x.shape[1])] if m == 10 else v[i]
                ok = n > 0
            out[m] = np.where(ok & (n > 0), np.asarray(val).astype(np.float32), np.float32(np.nan))
    return out


def casa_moment_maps(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    moments: Iterable[int],
    include: float | Sequence[float] | None = None,
    exclude: float | Sequence[float] | None = None,
) -> dict[int, _Array]:
    """Moment maps exactly as CASA ``immoments`` computes them (see the module docstring).

    Parameters
    ----------
    cube : numpy.ndarray
        ``(spectral, y, x)`` float32 (or float64) intensities, data units (e.g. Jy/beam);
        NaN/inf are blank. Not modified; may be a read-only view or memmap slice.
    coords : array_like
        ``(nz,)`` spectral coordinate of every channel in output units (CASA: km/s).
    widths : array_like
        ``(nz,)`` channel widths in the same units; only ``|dv|`` is used (moment 0).
    moments : iterable of int
        CASA moment numbers, any subset of ``-1 .. 11``.
    include, exclude : float, sequence of float or None, optional
        immoments ``includepix`` / ``excludepix`` (data units); at most one of them.

    Returns
    -------
    dict of int to numpy.ndarray
        ``(y, x)`` float32 map per requested moment; NaN where CASA masks the pixel. Units:
        -1, 3, 5-8, 10: data units; 0: data units x coordinate units; 1, 2, 4, 9, 11:
        coordinate units.

    Raises
    ------
    ValueError
        Bad shapes, unknown moments, both ranges, or moment 4 without a one-signed range.
    """
    moms, v, width, w, rng, is_include = plan_casa(cube, coords, widths, moments, include, exclude)
    nz, ny, nx = cube.shape
    out = {m: np.empty((ny, nx), dtype=np.float32) for m in moms}
    rows = max(1, min(ny, _TILE_VOXELS // max(1, nz * nx)))
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        x = np.asarray(cube[:, y0:y1, :], dtype=np.float64).reshape(nz, -1)
        for m, val in _tile(x, moms, v, width, w, rng, is_include).items():
            out[m][y0:y1] = val.reshape(y1 - y0, nx)
    return out

"""Image statistics over a masked region (CASA ``imstat`` keys), NumPy reference.

Backs the ``imstat`` task of ``POST /api/visualization/js9/analysis``. The service cuts the
region's bounding box out of the cube, ``block`` of shape ``(spectral, y, x)``, and passes
the region as a spatial boolean ``mask`` ``(y, x)`` that applies to every plane. Blank
(non-finite: NaN, ±inf) pixels are excluded.

Chunking (contract rule 5): a reduction over pixels, exposed as ``stats_partial`` /
``stats_combine`` / ``stats_finalize``. A partial holds exact moments (count, Σx, Σx² in
float64), the first positions of the minimum and maximum, and the chunk's finite values
as a *sorted run*. Combining keeps the runs (no merge); the order statistics are selected
exactly across runs by bisection on the values, so any chunking gives the same numbers as
the whole (the sums to float64 rounding, everything else bit for bit). Sorting runs in
parallel threads is how the service makes a large image fast on the CPU.

Definitions (as CASA ``imstat`` computes them; checked against casatasks):

- ``npts = n``, ``sum = Σx``, ``sumsq = Σx²`` (float64 accumulation of the float32 data),
  ``mean = Σx / n``, ``sigma = √((Σx² − (Σx)²/n) / (n − 1))`` (sample standard deviation),
  ``rms = √(Σx² / n)``;
- with the finite values sorted, ``x₍₀₎ ≤ … ≤ x₍ₙ₋₁₎``: ``median`` is ``x₍₍ₙ₋₁₎/₂₎`` for odd
  ``n`` and the mean of the two middle values for even ``n``; ``q1 = x₍⌈n/4⌉−1₎``,
  ``q3 = x₍⌈3n/4⌉−1₎``, ``quartile = q3 − q1``;
- ``medabsdevmed`` is the median (same even/odd rule) of ``|x − median|`` (float64);
- ``minpos``/``maxpos``: the first occurrence in C order of ``(z, y, x)`` (x fastest, as
  CASA iterates), reported in absolute ``(z, y, x)`` using ``origin``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kernel_common.imstat import combine_scalars, empty_partial, scalar_stats

#: Array type of this tree (``gpu_kernels.stats`` names ``cupy.ndarray`` the same way).
_Array = np.ndarray

#: Elements converted to float64 at a time for Σx and Σx² (stays in cache; see module doc).
_SUM_BLOCK = 1 << 18



def stats_partial(block: _Array, mask: _Array | None = None, *,
                  origin: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    """Partial statistics of the finite, in-mask pixels of one chunk.

    Parameters
    ----------
    block : numpy.ndarray
        ``(spectral, y, x)`` float32 chunk, data units (e.g. Jy/beam). NaN/±inf are blank.
    mask : numpy.ndarray, optional
        ``(y, x)`` bool region mask applied to every plane (``None``: every pixel).
    origin : tuple of int, optional
        Absolute ``(z, y, x)`` of ``block[0, 0, 0]`` in the image, for ``minpos``/``maxpos``.

    Returns
    -------
    dict
        ``npts`` (int), ``sum`` and ``sumsq`` (float, float64 accumulation), ``min``/``max``
        (float, NaN when empty), ``minpos``/``maxpos`` (``(z, y, x)`` int tuples, ``-1`` when
        empty) and ``runs`` (tuple of sorted float32 arrays of the finite values).
    """
    a = np.asarray(block)
    if a.ndim != 3:
        raise ValueError(f"stats_partial expects a (spectral, y, x) block, got shape {a.shape}")
    nz, ny, nx = a.shape
    if mask is None:
        sel = a.reshape(-1)
        flat_yx = None
    else:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (ny, nx):
            raise ValueError(f"mask shape {m.shape} does not match block planes {(ny, nx)}")
        flat_yx = np.flatnonzero(m)
        sel = a.reshape(nz, ny * nx)[:, flat_yx].reshape(-1)
    s = np.sort(sel)  # -inf first, then finite, +inf, NaN last
    lo = int(np.searchsorted(s, np.float32(-np.inf), side="right"))
    hi = int(np.searchsorted(s, np.float32(np.inf), side="left"))
    run = s[lo:hi]
    n = int(run.size)
    if n == 0:
        return empty_partial()
    total, sumsq = _sums(run)
    vmin, vmax = run[0], run[-1]
    return {
        "npts": n,
        "sum": total,
        "sumsq": sumsq,
        "min": float(vmin),
        "max": float(vmax),
        "minpos": _position(sel, vmin, nz, ny, nx, flat_yx, origin),
        "maxpos": _position(sel, vmax, nz, ny, nx, flat_yx, origin),
        "runs": (run,),
    }


def stats_combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Combine two partials (order-independent up to float64 rounding of the sums).

    Ties of the extreme values keep the lexicographically first ``(z, y, x)`` position, so the
    result does not depend on how the image was cut into chunks.
    """
    if a["npts"] == 0:
        return b
    if b["npts"] == 0:
        return a
    out = combine_scalars(a, b)
    out["runs"] = tuple(a["runs"]) + tuple(b["runs"])
    return out


def stats_finalize(partial: dict[str, Any]) -> dict[str, Any]:
    """CASA ``imstat`` statistics from a (combined) partial.

    Returns
    -------
    dict
        ``npts, sum, sumsq, mean, sigma, rms, min, max, median, medabsdevmed, q1, q3, quartile``
        (floats; NaN when ``npts == 0``; ``sigma`` is 0 for a single pixel) and
        ``minpos``/``maxpos`` (absolute ``(z, y, x)``).
    """
    out = scalar_stats(partial)
    n = out["npts"]
    if n == 0:
        return out
    runs = [r for r in partial["runs"] if r.size]
    median = _median_of(lambda k: _kth_value(runs, k), n)
    q1 = float(_kth_value(runs, math.ceil(n / 4) - 1))
    q3 = float(_kth_value(runs, math.ceil(3 * n / 4) - 1))
    out.update(median=median, q1=q1, q3=q3, quartile=q3 - q1)
    out["medabsdevmed"] = _median_of(lambda k: _kth_deviation(runs, median, k), n)
    return out


def region_stats(block: _Array, mask: _Array | None = None) -> dict[str, Any]:
    """``stats_finalize(stats_partial(block, mask))``: the statistics of one chunk."""
    return stats_finalize(stats_partial(block, mask))


# -- helpers --------------------------------------------------------------------------------------




def _sums(run: np.ndarray) -> tuple[float, float]:
    """Σx and Σx² of float32 values, accumulated in float64 through a cache-sized buffer.

    ``einsum`` rather than ``dot``: BLAS ``ddot`` may wake its thread pool, which costs more
    than the sum itself on small regions and competes with the chunk threads on large ones.
    """
    buf = np.empty(min(_SUM_BLOCK, run.size), dtype=np.float64)
    total = 0.0
    sumsq = 0.0
    for start in range(0, run.size, _SUM_BLOCK):
        piece = run[start : start + _SUM_BLOCK]
        w = buf[: piece.size]
        np.copyto(w, piece)
        total += float(w.sum())
        sumsq += float(np.einsum("i,i->", w, w))
    return total, sumsq


def _position(sel: np.ndarray, value: np.floating, nz: int, ny: int, nx: int, flat_yx: np.ndarray | None,
              origin: tuple[int, int, int]) -> tuple[int, int, int]:
    """Absolute ``(z, y, x)`` of the first occurrence of ``value`` in ``sel`` (C order)."""
    index = _first_equal(sel, value)
    per_plane = ny * nx if flat_yx is None else flat_yx.size
    z, rest = divmod(index, per_plane)
    if flat_yx is not None:
        rest = int(flat_yx[rest])
    y, x = divmod(rest, nx)
    return (origin[0] + z, origin[1] + y, origin[2] + x)


def _first_equal(values: np.ndarray, value: np.floating) -> int:
    """Index of the first element equal to ``value``, scanning in cache-sized pieces."""
    step = 1 << 20
    for start in range(0, values.size, step):
        hit = values[start : start + step] == value
        if hit.any():
            return start + int(np.argmax(hit))
    raise ValueError("value not present")  # pragma: no cover - the value comes from the data


def _median_of(kth: Any, n: int) -> float:
    """Median from a k-th-smallest accessor: middle value, or mean of the two middle values."""
    if n % 2:
        return float(kth((n - 1) // 2))
    return 0.5 * (float(kth(n // 2 - 1)) + float(kth(n // 2)))


def _key32(value: np.float32) -> int:
    """Order-preserving integer key of a float32 (−0.0 sorts just below +0.0)."""
    bits = int(np.array(value, dtype=np.float32).view(np.int32))
    return bits if bits >= 0 else -(bits & 0x7FFFFFFF) - 1


def _from_key32(key: int) -> np.float32:
    bits = key if key >= 0 else ((-key - 1) | 0x80000000) - (1 << 32)
    return np.array(bits, dtype=np.int32).view(np.float32)[()]


def _kth_value(runs: list[np.ndarray], k: int) -> np.float32:
    """The k-th smallest (0-based) value of the union of sorted float32 runs, exactly.

    One run: direct indexing. Several: bisection on the float32 order keys for the smallest
    value ``v`` with ``#{x ≤ v} ≥ k + 1`` (at most 32 steps of one ``searchsorted`` per run).
    """
    if len(runs) == 1:
        return runs[0][k]
    lo = _key32(min(r[0] for r in runs))
    hi = _key32(max(r[-1] for r in runs))
    while lo < hi:
        mid = (lo + hi) // 2
        v = _from_key32(mid)
        if sum(int(np.searchsorted(r, v, side="right")) for r in runs) >= k + 1:
            hi = mid
        else:
            lo = mid + 1
    return _from_key32(lo) + np.float32(0.0)  # -0.0 -> 0.0


def _floor32(y: float) -> np.float32:
    """Largest float32 ≤ ``y``."""
    c = np.float32(y)
    return np.nextafter(c, np.float32(-np.inf)) if float(c) > y else c


def _ceil32(y: float) -> np.float32:
    """Smallest float32 ≥ ``y``."""
    c = np.float32(y)
    return np.nextafter(c, np.float32(np.inf)) if float(c) < y else c


def _kth_deviation(runs: list[np.ndarray], center: float, k: int) -> float:
    """The k-th smallest (0-based) ``|x − center|`` over sorted float32 runs, in float64, exactly.

    ``#{x : |x − c| ≤ t}`` is the number of values in ``[c − t, c + t]``: two ``searchsorted``
    per run with float32 bounds. Bisection over the float64 bit patterns of ``t ≥ 0`` finds
    the smallest ``t`` reaching ``k + 1``; the answer is then snapped to the largest deviation
    among the values counted (a deviation that some value really has).
    """
    lo_v = min(float(r[0]) for r in runs)
    hi_v = max(float(r[-1]) for r in runs)
    top = max(center - lo_v, hi_v - center, 0.0)

    def count(t: float) -> int:
        a, b = _ceil32(center - t), _floor32(center + t)
        return sum(int(np.searchsorted(r, b, side="right")) - int(np.searchsorted(r, a, side="left")) for r in runs)

    lo, hi = 0, int(np.array(top, dtype=np.float64).view(np.int64))
    while lo < hi:
        mid = (lo + hi) // 2
        if count(float(np.array(mid, dtype=np.int64).view(np.float64))) >= k + 1:
            hi = mid
        else:
            lo = mid + 1
    t = float(np.array(lo, dtype=np.int64).view(np.float64))
    a, b = _ceil32(center - t), _floor32(center + t)
    best = 0.0
    for r in runs:
        i0 = int(np.searchsorted(r, a, side="left"))
        i1 = int(np.searchsorted(r, b, side="right"))
        if i1 > i0:
            best = max(best, center - float(r[i0]), float(r[i1 - 1]) - center)
    return best

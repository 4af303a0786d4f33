"""Image statistics over a masked region (CASA ``imstat`` keys) on the GPU (CuPy).

Same public functions and signatures as :mod:`cpu_fallback.stats` (the reference, which
documents every definition). CuPy is imported inside the functions.

Device strategy: the finite values of a chunk are sorted on the device (``cupy.sort``);
``stats_combine`` concatenates and re-sorts the runs (a device sort is cheap), so
``stats_finalize`` always sees one sorted run and reads the order statistics by index.
The median absolute deviation sorts ``|x − median|`` in float64 on the device. Σx and Σx²
accumulate in float64. The scalar results (count, sums, extremes, positions) are copied to
the host (``# sync``); the sorted runs stay on the device.
"""

from __future__ import annotations

import math
from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.imstat import combine_scalars, empty_partial, scalar_stats

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-9)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("region_stats", ("cube",)),)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any



def stats_partial(block: _Array, mask: _Array | None = None, *,
                  origin: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    """Partial statistics of the finite, in-mask pixels of one chunk, on the device.

    Parameters
    ----------
    block : cupy.ndarray
        ``(spectral, y, x)`` float32 chunk, data units. NaN/±inf are blank.
    mask : cupy.ndarray, optional
        ``(y, x)`` bool region mask applied to every plane (``None``: every pixel).
    origin : tuple of int, optional
        Absolute ``(z, y, x)`` of ``block[0, 0, 0]``.

    Returns
    -------
    dict
        As :func:`cpu_fallback.stats.stats_partial`; ``runs`` holds one sorted float32 device array.
    """
    import cupy as cp

    a = cp.asarray(block)
    if a.ndim != 3:
        raise ValueError(f"stats_partial expects a (spectral, y, x) block, got shape {a.shape}")
    nz, ny, nx = a.shape
    if mask is None:
        sel = a.reshape(-1)
        flat_yx = None
    else:
        m = cp.asarray(mask, dtype=bool)
        if m.shape != (ny, nx):
            raise ValueError(f"mask shape {m.shape} does not match block planes {(ny, nx)}")
        flat_yx = cp.flatnonzero(m)
        sel = a.reshape(nz, ny * nx)[:, flat_yx].reshape(-1)
    finite = cp.isfinite(sel)
    run = cp.sort(sel[finite])
    n = int(run.size)  # sync
    if n == 0:
        return empty_partial()
    w = run.astype(cp.float64)
    total = float(w.sum())  # sync
    sumsq = float(cp.dot(w, w))  # sync
    vmin, vmax = float(run[0]), float(run[-1])  # sync
    return {
        "npts": n,
        "sum": total,
        "sumsq": sumsq,
        "min": vmin,
        "max": vmax,
        "minpos": _position(sel, run[0], nz, ny, nx, flat_yx, origin),
        "maxpos": _position(sel, run[-1], nz, ny, nx, flat_yx, origin),
        "runs": (run,),
    }


def stats_combine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Combine two partials; the device runs are concatenated and sorted into one."""
    import cupy as cp

    if a["npts"] == 0:
        return b
    if b["npts"] == 0:
        return a
    out = combine_scalars(a, b)
    out["runs"] = (cp.sort(cp.concatenate([*a["runs"], *b["runs"]])),)
    return out


def stats_finalize(partial: dict[str, Any]) -> dict[str, Any]:
    """CASA ``imstat`` statistics from a (combined) partial (see :func:`cpu_fallback.stats.stats_finalize`)."""
    import cupy as cp

    out = scalar_stats(partial)
    n = out["npts"]
    if n == 0:
        return out
    runs = [r for r in partial["runs"] if r.size]
    run = runs[0] if len(runs) == 1 else cp.sort(cp.concatenate(runs))
    idx = [(n - 1) // 2, n // 2, math.ceil(n / 4) - 1, math.ceil(3 * n / 4) - 1]
    mid_lo, mid_hi, q1, q3 = (float(v) for v in cp.asnumpy(run[cp.asarray(idx)]))  # sync
    median = mid_lo if n % 2 else 0.5 * (mid_lo + mid_hi)
    out.update(median=median, q1=q1, q3=q3, quartile=q3 - q1)
    dev = cp.sort(cp.abs(run.astype(cp.float64) - median))
    d_lo, d_hi = (float(v) for v in cp.asnumpy(dev[cp.asarray(idx[:2])]))  # sync
    out["medabsdevmed"] = d_lo if n % 2 else 0.5 * (d_lo + d_hi)
    return out


def region_stats(block: _Array, mask: _Array | None = None) -> dict[str, Any]:
    """``stats_finalize(stats_partial(block, mask))``: the statistics of one chunk."""
    return stats_finalize(stats_partial(block, mask))




def _position(sel: Any, value: Any, nz: int, ny: int, nx: int, flat_yx: Any,
              origin: tuple[int, int, int]) -> tuple[int, int, int]:
    """Absolute ``(z, y, x)`` of the first occurrence of ``value`` in ``sel`` (C order)."""
    import cupy as cp

    index = int(cp.argmax(sel == value))  # sync; argmax returns the first True
    per_plane = ny * nx if flat_yx is None else int(flat_yx.size)
    z, rest = divmod(index, per_plane)
    if flat_yx is not None:
        rest = int(flat_yx[rest])  # sync
    y, x = divmod(rest, nx)
    return (origin[0] + z, origin[1] + y, origin[2] + x)

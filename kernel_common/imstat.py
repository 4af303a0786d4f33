"""The scalar half of the ``imstat`` statistics, shared by :mod:`cpu_fallback.stats` and
:mod:`gpu_kernels.stats` (the order statistics -- median, quartiles, MAD -- stay in each tree:
the CPU merges sorted runs, the GPU sorts one device array).

For the ``n`` finite pixels with ``S = sum x`` and ``Q = sum x^2`` (float64):
``mean = S / n``, ``rms = sqrt(Q / n)``, ``sigma = sqrt(max(0, (Q - S^2 / n) / (n - 1)))`` (0 for
one pixel), as CASA ``imstat``.
"""

from __future__ import annotations

import math
from typing import Any

#: Statistics that are NaN for an empty selection.
NAN_WHEN_EMPTY = ("mean", "sigma", "rms", "min", "max", "median", "medabsdevmed", "q1", "q3", "quartile")


#: ``minpos``/``maxpos`` of a chunk without finite pixels.
NO_POSITION = (-1, -1, -1)


def empty_partial() -> dict[str, Any]:
    """The ``stats_partial`` of a chunk without finite pixels (both trees)."""
    return {"npts": 0, "sum": 0.0, "sumsq": 0.0, "min": math.nan, "max": math.nan,
            "minpos": NO_POSITION, "maxpos": NO_POSITION, "runs": ()}


def combine_scalars(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Counts and sums added, extrema kept with their positions (ties: the first ``(z, y, x)``)."""
    out = {"npts": a["npts"] + b["npts"], "sum": a["sum"] + b["sum"], "sumsq": a["sumsq"] + b["sumsq"]}
    for key, sign in (("min", 1.0), ("max", -1.0)):
        pos = key + "pos"
        if sign * a[key] < sign * b[key] or (a[key] == b[key] and tuple(a[pos]) <= tuple(b[pos])):
            out[key], out[pos] = a[key], a[pos]
        else:
            out[key], out[pos] = b[key], b[pos]
    return out


def scalar_stats(partial: dict[str, Any]) -> dict[str, Any]:
    """``npts``, positions, ``sum, sumsq, mean, rms, sigma, min, max`` of a partial (NaN-filled if empty)."""
    n = int(partial["npts"])
    out: dict[str, Any] = {"npts": n, "minpos": tuple(partial["minpos"]), "maxpos": tuple(partial["maxpos"])}
    if n == 0:
        out.update(sum=0.0, sumsq=0.0)
        out.update({key: math.nan for key in NAN_WHEN_EMPTY})
        return out
    total, sumsq = float(partial["sum"]), float(partial["sumsq"])
    out.update(sum=total, sumsq=sumsq, mean=total / n, rms=math.sqrt(sumsq / n))
    out["sigma"] = math.sqrt(max(0.0, (sumsq - total * total / n) / (n - 1))) if n > 1 else 0.0
    out["min"], out["max"] = float(partial["min"]), float(partial["max"])
    return out

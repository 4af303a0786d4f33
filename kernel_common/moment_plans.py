"""Host-side spectral-axis plans of the two moment conventions, shared by both kernel trees.

:func:`plan_axis` validates and centres the axis of the API-reference moments
(:mod:`cpu_fallback.moments`); :func:`plan_casa` validates the arguments of the CASA
``immoments`` convention (:mod:`cpu_fallback.casa_moments`), with :func:`pixel_range` reading an
``includepix``/``excludepix`` value. Host NumPy only: the GPU kernels read ``coords``/``widths``
back to the host first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Moment orders of the API reference.
SUPPORTED_ORDERS: frozenset[int] = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 10})

#: Moment numbers understood by CASA ``immoments``.
CASA_MOMENTS: frozenset[int] = frozenset(range(-1, 12))

#: Relative variance floor: ``|var| <= VAR_FLOOR * max|u|^2`` counts as zero (rounding level).
VAR_FLOOR = 1e-13


class AxisPlan(NamedTuple):
    """Host-side spectral-axis preparation shared by the CPU and GPU kernels."""

    orders: tuple[int, ...]
    ref: float  # centring reference, coordinate units
    u: NDArray[np.float64]  # (nz,) centred coordinates v - ref
    w: NDArray[np.float64]  # (nz,) integration weights dv >= 0
    var_floor: float  # variances with |var| <= var_floor are zero
    threshold: float | None


def plan_axis(
    nz: int, coords: ArrayLike, widths: ArrayLike, orders: Iterable[int], threshold: float | None
) -> AxisPlan:
    """Validate the spectral axis and the options; centre the coordinates.

    Parameters
    ----------
    nz : int
        Number of channels.
    coords, widths : array_like
        ``(nz,)`` host arrays: coordinates and integration weights ``dv >= 0``.
    orders : iterable of int
        Requested orders, a subset of :data:`SUPPORTED_ORDERS`.
    threshold : float or None
        Keep voxels with ``I >= threshold`` (data units).

    Returns
    -------
    AxisPlan
    """
    v = np.asarray(coords, dtype=np.float64).reshape(-1)
    w = np.asarray(widths, dtype=np.float64).reshape(-1)
    if nz < 1 or v.shape != (nz,) or w.shape != (nz,):
        raise ValueError(f"coords and widths must have shape ({nz},) with nz >= 1")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError("coords must be finite and widths finite and >= 0")
    ords = tuple(sorted({int(o) for o in orders}))
    if not ords or not set(ords) <= SUPPORTED_ORDERS:
        raise ValueError(f"orders must be a non-empty subset of {sorted(SUPPORTED_ORDERS)}, got {ords}")
    if threshold is not None and not np.isfinite(threshold):
        raise ValueError("threshold must be finite or None")
    ref = float(np.mean(v))
    u = v - ref
    floor = VAR_FLOOR * float(np.max(np.abs(u))) ** 2
    return AxisPlan(ords, ref, u, w, floor, None if threshold is None else float(threshold))


def pixel_range(values: float | Sequence[float] | None) -> tuple[float, float] | None:
    """Interpret an immoments ``includepix``/``excludepix`` value.

    Parameters
    ----------
    values : float, sequence of float or None
        ``None``, ``-1`` or ``[-1]`` mean "no range"; one other value ``v`` means
        ``[-|v|, |v|]``; two values are the range in either order (data units).

    Returns
    -------
    tuple of float or None
        ``(lo, hi)`` with ``lo <= hi``, or None.
    """
    if values is None:
        return None
    vals = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))]
    if len(vals) == 1:
        return None if vals[0] == -1.0 else (-abs(vals[0]), abs(vals[0]))
    if len(vals) == 2:
        return min(vals), max(vals)
    raise ValueError(f"a pixel range has one or two values, got {len(vals)}")


def plan_casa(
    cube: NDArray[np.floating],
    coords: ArrayLike,
    widths: ArrayLike,
    moments: Iterable[int],
    include: float | Sequence[float] | None,
    exclude: float | Sequence[float] | None,
) -> tuple[tuple[int, ...], NDArray[np.float64], float | None, NDArray[np.float64], tuple | None, bool]:
    """Validate arguments; return (moments, coords, width, widths, range, is_include)."""
    if getattr(cube, "ndim", 0) != 3 or cube.shape[0] == 0:
        raise ValueError(f"expected a (spectral, y, x) cube with >= 1 channel, got {cube.shape}")
    nz = cube.shape[0]
    v = np.asarray(coords, dtype=np.float64).reshape(-1)
    w = np.abs(np.asarray(widths, dtype=np.float64).reshape(-1))
    if v.shape != (nz,) or w.shape != (nz,):
        raise ValueError(f"coords and widths must have shape ({nz},)")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(w))):
        raise ValueError("coords and widths must be finite")
    moms = tuple(sorted({int(m) for m in moments}))
    if not moms or not set(moms) <= CASA_MOMENTS:
        raise ValueError(f"moments must be a non-empty subset of -1..11, got {moms}")
    inc, exc = pixel_range(include), pixel_range(exclude)
    if inc is not None and exc is not None:
        raise ValueError("only one of include or exclude may be given (as in immoments)")
    rng = inc if inc is not None else exc
    if 4 in moms and (rng is None or rng[0] * rng[1] < 0):
        raise ValueError(
            "the median coordinate (moment 4) needs an include or exclude range that is "
            "either all positive or all negative (as in CASA immoments)"
        )
    width = float(w[0]) if np.all(w == w[0]) else None
    return moms, v, width, w, rng, inc is not None

"""Array views shared by the kernel trees: finite data range, step check, host copies."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Elements reduced per slab by :func:`finite_range` (bounds the temporaries).
RANGE_SLAB_ELEMENTS = 1 << 23


def finite_range(array: Any, xp: Any = np, slab_elements: int = RANGE_SLAB_ELEMENTS) -> tuple[float, float]:
    """Minimum and maximum over the finite values of an array (NumPy, memmap or CuPy).

    Parameters
    ----------
    array : array
        Any shape and real dtype, data units; NaN and +-inf are ignored (NaN means blank).
    xp : module, optional
        ``numpy`` (default; memmaps are read slab by slab, once) or ``cupy`` (the per-slab
        results stay on the device and come back in one transfer: one sync).
    slab_elements : int, optional
        About this many elements are reduced at once along axis 0.

    Returns
    -------
    (float, float)
        ``(min, max)`` of the finite values as Python floats, in the data unit; ``(0.0, 0.0)``
        when the array holds no finite value (the ``range_min``/``range_max`` wire rule).

    Notes
    -----
    Per slab ``min(where(isfinite(v), v, +inf))`` and ``max(where(isfinite(v), v, -inf))``;
    min and max are exact, so every slab size and both namespaces give the same numbers.
    """
    a = xp.asarray(array) if xp is not np else np.asarray(array)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.size == 0:
        return 0.0, 0.0
    row = 1
    for n in a.shape[1:]:
        row *= int(n)
    rows = max(1, slab_elements // max(row, 1))
    los, his = [], []
    for start in range(0, a.shape[0], rows):
        slab = xp.asarray(a[start : start + rows])
        finite = xp.isfinite(slab)
        if xp is np:  # no temporary copy of the slab
            los.append(np.min(slab, initial=np.inf, where=finite).astype(np.float64))
            his.append(np.max(slab, initial=-np.inf, where=finite).astype(np.float64))
        else:
            los.append(xp.where(finite, slab, xp.inf).min().astype(np.float64))
            his.append(xp.where(finite, slab, -xp.inf).max().astype(np.float64))
    both = xp.stack([xp.stack(los).min(), xp.stack(his).max()])
    lo, hi = (float(v) for v in to_host(both))  # sync (two numbers)
    if not lo <= hi:  # no finite value: lo = +inf, hi = -inf
        return 0.0, 0.0
    return lo, hi


def check_step(step: Any) -> int:
    """A decimation stride as a Python int; ``ValueError`` unless an integer ``>= 1``."""
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    return int(step)


def to_host(a: Any) -> np.ndarray:
    """A NumPy copy/view of ``a`` (copied from the device if it is a CuPy array)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)  # sync

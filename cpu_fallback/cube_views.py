"""Cube views on the CPU: finite data range and strided preview (NumPy reference).

Backs ``POST /v1/cube/preview``, ``/cube/slice`` and ``/image/preview`` (client contract
§4.1, §4.2, §1 ``range_min``/``range_max``). Inputs may be ``numpy.memmap`` views of a FITS
file: both functions walk the array in bounded slabs along the first axis and copy only what
they return, so a preview of a large cube reads at most the planes it keeps.
"""

from __future__ import annotations

import numpy as np

#: Array type of this tree (the GPU tree names ``cupy.ndarray`` the same way, so the
#: ``inspect.signature`` of every public function is identical in both trees).
_Array = np.ndarray

#: Elements examined per slab by :func:`finite_range` (bounds temporary memory to ~64 MiB).
_CHUNK_ELEMENTS = 1 << 23


def _slab_rows(shape: tuple[int, ...]) -> int:
    """Number of leading-axis rows per slab so that a slab holds about ``_CHUNK_ELEMENTS``."""
    row = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
    return max(1, _CHUNK_ELEMENTS // max(row, 1))


def finite_range(array: _Array) -> tuple[float, float]:
    """Minimum and maximum over the finite values of an array.

    Parameters
    ----------
    array : numpy.ndarray
        Any shape (a ``(spectral, y, x)`` cube, a ``(y, x)`` plane ...), real dtype, data units.
        NaN and ±inf are ignored (NaN means blank).

    Returns
    -------
    (float, float)
        ``(min, max)`` of the finite values as Python floats, in the data unit; ``(0.0, 0.0)``
        when the array holds no finite value (the ``range_min``/``range_max`` wire rule).

    Notes
    -----
    The array is scanned in slabs along axis 0 of about ``2**23`` elements; per slab
    ``min(where(isfinite(v), v, +inf))`` and ``max(where(isfinite(v), v, -inf))`` are taken, so
    memory stays bounded and a memmap is read once.
    """
    a = np.asarray(array)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.size == 0:
        return 0.0, 0.0
    lo, hi = np.inf, -np.inf
    rows = _slab_rows(a.shape)
    for start in range(0, a.shape[0], rows):
        slab = np.asarray(a[start : start + rows])
        finite = np.isfinite(slab)
        if not finite.any():
            continue
        lo = min(lo, float(np.min(slab, initial=np.inf, where=finite)))
        hi = max(hi, float(np.max(slab, initial=-np.inf, where=finite)))
    if not np.isfinite(lo):
        return 0.0, 0.0
    return float(lo), float(hi)


def strided_preview(cube: _Array, *, step: int) -> _Array:
    """Plain strided decimation ``cube[::step, ::step, ::step]`` (no averaging).

    Parameters
    ----------
    cube : numpy.ndarray
        Array to decimate, normally ``(spectral, y, x)``; every axis is strided. May be a memmap.
    step : int
        Stride ``s >= 1`` applied to every axis.

    Returns
    -------
    numpy.ndarray
        New C-contiguous ``float32`` array (never a memmap or a view of the input) of shape
        ``ceil(n_i / s)`` per axis, holding ``cube[i*s, j*s, k*s]``. NaN passes through.

    Raises
    ------
    ValueError
        If ``step`` is not an integer ``>= 1``.
    """
    s = _check_step(step)
    view = np.asarray(cube)[(slice(None, None, s),) * np.ndim(cube)]
    return np.array(view, dtype=np.float32, order="C", copy=True)


def _check_step(step: int) -> int:
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step must be an integer >= 1, got {step!r}")
    return int(step)

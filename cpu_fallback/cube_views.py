"""Cube views on the CPU: finite data range and strided preview (NumPy reference).

Backs ``POST /v1/cube/preview``, ``/cube/slice`` and ``/image/preview`` (client contract
§4.1, §4.2, §1 ``range_min``/``range_max``). Inputs may be ``numpy.memmap`` views of a FITS
file: both functions walk the array in bounded slabs along the first axis and copy only what
they return, so a preview of a large cube reads at most the planes it keeps.
"""

from __future__ import annotations

import numpy as np

from kernel_common.views import check_step
from kernel_common.views import finite_range as _finite_range

#: Array type of this tree (the GPU tree names ``cupy.ndarray`` the same way, so the
#: ``inspect.signature`` of every public function is identical in both trees).
_Array = np.ndarray

def finite_range(array: _Array) -> tuple[float, float]:
    """Minimum and maximum over the finite values of an array.

    Parameters
    ----------
    array : numpy.ndarray
        Any shape (a ``(spectral, y, x)`` cube, a ``(y, x)`` plane ...), real dtype, data units.
        NaN and ±inf are ignored (NaN means blank). May be a memmap (read slab by slab, once).

    Returns
    -------
    (float, float)
        ``(min, max)`` of the finite values as Python floats, in the data unit; ``(0.0, 0.0)``
        when the array holds no finite value (the ``range_min``/``range_max`` wire rule).
        Computed by :func:`kernel_common.views.finite_range` with NumPy.
    """
    return _finite_range(array, np)


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
    s = check_step(step)
    view = np.asarray(cube)[(slice(None, None, s),) * np.ndim(cube)]
    return np.array(view, dtype=np.float32, order="C", copy=True)

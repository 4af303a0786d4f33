"""Cube views on the GPU: finite data range and strided preview (CuPy).

Same public functions and signatures as :mod:`cpu_fallback.cube_views`; arrays in and out
are CuPy arrays on the current device (the dispatcher selects device and stream). CuPy is
imported inside the functions so this module imports on a machine without CUDA.
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.views import check_step
from kernel_common.views import finite_range as _finite_range

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=0.0)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("finite_range", ("cube",)), Case("strided_preview", ("cube",), {"step": 2}))

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

#: Elements examined per slab by :func:`finite_range` (bounds the temporary to ~64 MiB).
_CHUNK_ELEMENTS = 1 << 24


def finite_range(array: _Array) -> tuple[float, float]:
    """Minimum and maximum over the finite values of a device array.

    Parameters
    ----------
    array : cupy.ndarray
        Any shape and real dtype, data units. NaN and ±inf are ignored (NaN means blank).

    Returns
    -------
    (float, float)
        ``(min, max)`` of the finite values as Python floats; ``(0.0, 0.0)`` when the array
        holds no finite value.

    Notes
    -----
    Slabs of about ``2**24`` elements along axis 0 are reduced on the device with
    ``min(where(isfinite(v), v, +inf))`` / ``max(where(isfinite(v), v, -inf))``; the per-slab
    results stay on the device and are fetched together in one host transfer (one sync).
    The result equals :func:`cpu_fallback.cube_views.finite_range` exactly (min/max are exact).
    """
    import cupy as cp

    return _finite_range(array, cp, _CHUNK_ELEMENTS)


def strided_preview(cube: _Array, *, step: int) -> _Array:
    """Plain strided decimation ``cube[::step, ::step, ::step]`` (no averaging), on the device.

    Parameters
    ----------
    cube : cupy.ndarray
        Array to decimate, normally ``(spectral, y, x)``; every axis is strided.
    step : int
        Stride ``s >= 1`` applied to every axis.

    Returns
    -------
    cupy.ndarray
        New C-contiguous ``float32`` device array of shape ``ceil(n_i / s)`` per axis holding
        ``cube[i*s, j*s, k*s]``. NaN passes through. Bit-identical to the CPU reference.

    Raises
    ------
    ValueError
        If ``step`` is not an integer ``>= 1``.
    """
    import cupy as cp

    s = check_step(step)
    a = cp.asarray(cube)
    view = a[(slice(None, None, s),) * a.ndim]
    return cp.array(view, dtype=cp.float32, order="C", copy=True)

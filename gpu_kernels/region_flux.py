"""Per-channel sums over a region (``specflux``) on the GPU (CuPy).

Same public function and signature as :mod:`cpu_fallback.region_flux` (the reference); arrays
in and out are CuPy arrays on the current device. CuPy is imported inside the function.
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-9, atol=1e-12)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("channel_sums", ("cube",)),)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any


def channel_sums(cube: _Array, mask: _Array | None = None) -> tuple[_Array, _Array]:
    """Sum (float64) and count (int64) of the finite, in-mask pixels of every channel, on the device.

    Parameters
    ----------
    cube : cupy.ndarray
        ``(spectral, y, x)`` float32, data units. NaN/±inf are blank.
    mask : cupy.ndarray, optional
        ``(y, x)`` bool region mask (``None``: every pixel).

    Returns
    -------
    sums : cupy.ndarray
        ``(nz,)`` float64 per-channel sums (data units · pixel).
    counts : cupy.ndarray
        ``(nz,)`` int64 pixels summed per channel.
    """
    import cupy as cp

    a = cp.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"channel_sums expects a (spectral, y, x) cube, got shape {a.shape}")
    nz, ny, nx = a.shape
    flat = a.reshape(nz, ny * nx)
    if mask is not None:
        m = cp.asarray(mask, dtype=bool)
        if m.shape != (ny, nx):
            raise ValueError(f"mask shape {m.shape} does not match cube planes {(ny, nx)}")
        flat = flat[:, cp.flatnonzero(m.reshape(-1))]
    finite = cp.isfinite(flat)
    sums = cp.where(finite, flat, cp.float32(0.0)).sum(axis=1, dtype=cp.float64)
    counts = finite.sum(axis=1, dtype=cp.int64)
    return sums, counts

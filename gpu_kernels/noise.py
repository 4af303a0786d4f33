"""Per-channel robust noise on the GPU: median and median absolute deviation (CuPy).

Same public function and signature as :mod:`cpu_fallback.noise`; arrays in and out are CuPy
arrays on the current device. CuPy is imported inside the function.

Why a row sort and not ``cupy.nanmedian``: ``nanmedian`` along an axis treats ``+-inf`` as data
(the contract says blank = non-finite), warns on all-blank channels, and would still need a
second masked pass for the MAD. Sorting each channel's row of a ``(k, ny*nx)`` float64 array
with every blank replaced by ``+inf`` (so blanks sort last whatever CuPy's NaN order is) and
picking ``(n-1)//2`` and ``n//2`` by the per-row finite count ``n`` does both statistics with
two segmented device sorts and no host round trip -- the same arithmetic as the CPU reference,
so results agree to the last bit.
"""

from __future__ import annotations

from typing import Any

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

#: float64 elements per spectral slab (about 128 MiB per temporary); at least one channel.
_CHUNK_ELEMENTS = 1 << 24


def channel_mad(cube: _Array, *, zero_as_blank: bool = False) -> tuple[_Array, _Array]:
    """Median and unscaled MAD of the finite pixels of every channel, on the device.

    Parameters
    ----------
    cube : cupy.ndarray
        ``(spectral, y, x)`` cube, already cropped to the region and channel range, data units.
        NaN and ±inf are blank.
    zero_as_blank : bool, optional
        If true, a channel in which more than 50 % of the finite pixels are exactly ``0`` has
        its zeros treated as blank too. Default false.

    Returns
    -------
    median : cupy.ndarray
        ``(nz,)`` float64, ``median_z = median{v : v in plane z, v finite}``, data units.
    mad : cupy.ndarray
        ``(nz,)`` float64, ``MAD_z = median{|v - median_z|}`` (unscaled; sigma = ``1.4826 * MAD``).

    Raises
    ------
    ValueError
        If ``cube`` is not 3-D.

    Notes
    -----
    Channels with fewer than 2 usable pixels give NaN. Work is done in slabs of whole channels
    of about ``2**24`` elements (a few such float64 temporaries live at once). No host sync.
    """
    import cupy as cp

    a = cp.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"channel_mad expects a (spectral, y, x) cube, got shape {a.shape}")
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    median = cp.full(nz, cp.nan, dtype=cp.float64)
    mad = cp.full(nz, cp.nan, dtype=cp.float64)
    if nz == 0 or npix == 0:
        return median, mad
    rows = max(1, _CHUNK_ELEMENTS // npix)
    for z0 in range(0, nz, rows):
        block = a[z0 : z0 + rows].astype(cp.float64).reshape(-1, npix)
        k = block.shape[0]
        median[z0 : z0 + k], mad[z0 : z0 + k] = _rows_median_mad(block, zero_as_blank=zero_as_blank)
    return median, mad


def _rows_median_mad(v: Any, *, zero_as_blank: bool) -> tuple[Any, Any]:
    """Median and MAD of the finite values of each row of a float64 ``(k, npix)`` device array."""
    import cupy as cp

    ok = cp.isfinite(v)
    if zero_as_blank:
        zero = ok & (v == 0.0)
        drop = 2 * zero.sum(axis=1) > ok.sum(axis=1)
        ok &= ~(zero & drop[:, None])
    n = ok.sum(axis=1)
    bad = n < 2
    lo = (cp.maximum(n, 1) - 1)[:, None] // 2
    hi = (n // 2)[:, None]
    s = cp.sort(cp.where(ok, v, cp.inf), axis=1)
    med = 0.5 * (cp.take_along_axis(s, lo, axis=1) + cp.take_along_axis(s, hi, axis=1))
    med = cp.where(bad[:, None], 0.0, med)  # keeps inf - inf out of the deviations
    cols = cp.arange(v.shape[1])[None, :]
    dev = cp.sort(cp.where(cols < n[:, None], cp.abs(s - med), cp.inf), axis=1)
    mad = 0.5 * (cp.take_along_axis(dev, lo, axis=1) + cp.take_along_axis(dev, hi, axis=1))
    return cp.where(bad, cp.nan, med[:, 0]), cp.where(bad, cp.nan, mad[:, 0])

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

from app.compute.contract import Case, Tolerance
from kernel_common.robust import plane_median_mad

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-6)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (Case("channel_mad", ("cube",)),)

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

    return plane_median_mad(cube, cp, zero_as_blank=zero_as_blank, chunk_elements=_CHUNK_ELEMENTS)

"""Per-channel robust noise on the CPU: median and median absolute deviation (NumPy reference).

Backs ``POST /v1/cube/noise`` (client contract §4.6). The service crops the region and the
channel range first and passes the cropped ``(spectral, y, x)`` cube here; it derives the
robust sigma as ``1.4826 * mad``.

Chunking: the statistic of channel ``z`` depends only on plane ``z``, so the cube is processed
in slabs of whole channels along the spectral axis and a chunked run equals a whole one
(``channel_mad(cube[a:b])`` is exactly ``channel_mad(cube)[a:b]``). A spatial split would not
be exact (a median does not combine), so there is no ``partial``/``combine`` pair.

Algorithm (shared bit for bit with :mod:`gpu_kernels.noise`): per slab the planes become rows
of a ``(k, ny*nx)`` float64 array; blanks are replaced by ``+inf`` so a row sort pushes them
to the end; with ``n`` finite values per row the median is ``0.5*(s[(n-1)//2] + s[n//2])``;
the absolute deviations of the ``n`` finite values are sorted the same way and give the MAD.
"""

from __future__ import annotations

import numpy as np

from kernel_common.robust import plane_median_mad

#: Array type of this tree (the GPU tree names ``cupy.ndarray`` the same way, so the
#: ``inspect.signature`` of every public function is identical in both trees).
_Array = np.ndarray

#: float64 elements per spectral slab (about 32 MiB per temporary); at least one channel.
_CHUNK_ELEMENTS = 1 << 22


def channel_mad(cube: _Array, *, zero_as_blank: bool = False) -> tuple[_Array, _Array]:
    """Median and unscaled MAD of the finite pixels of every channel.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(spectral, y, x)`` cube, already cropped to the region and channel range, data units
        (e.g. Jy/beam). NaN and ±inf are blank. May be a memmap.
    zero_as_blank : bool, optional
        If true, a channel in which more than 50 % of the finite pixels are exactly ``0`` has
        its zeros treated as blank too (the newer backend's zero-as-blank rule). Default false.

    Returns
    -------
    median : numpy.ndarray
        ``(nz,)`` float64, ``median_z = median{v : v in plane z, v finite}``, data units.
    mad : numpy.ndarray
        ``(nz,)`` float64, ``MAD_z = median{|v - median_z|}`` (unscaled; the Gaussian-equivalent
        sigma is ``1.4826 * MAD_z``), data units.

    Raises
    ------
    ValueError
        If ``cube`` is not 3-D.

    Notes
    -----
    A channel with fewer than 2 usable pixels gives NaN in both arrays. Values are promoted to
    float64 before any arithmetic; for an even count the median is the mean of the two middle
    values. Work is done in slabs of whole channels (about ``2**22`` elements each).
    """
    return plane_median_mad(cube, np, zero_as_blank=zero_as_blank, chunk_elements=_CHUNK_ELEMENTS)

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
    a = np.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"channel_mad expects a (spectral, y, x) cube, got shape {a.shape}")
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    median = np.full(nz, np.nan)
    mad = np.full(nz, np.nan)
    if nz == 0 or npix == 0:
        return median, mad
    rows = max(1, _CHUNK_ELEMENTS // npix)
    for z0 in range(0, nz, rows):
        block = np.asarray(a[z0 : z0 + rows], dtype=np.float64).reshape(-1, npix)
        median[z0 : z0 + block.shape[0]], mad[z0 : z0 + block.shape[0]] = _rows_median_mad(
            block, zero_as_blank=zero_as_blank
        )
    return median, mad


def _rows_median_mad(v: np.ndarray, *, zero_as_blank: bool) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of the finite values of each row of a float64 ``(k, npix)`` array."""
    ok = np.isfinite(v)
    if zero_as_blank:
        zero = ok & (v == 0.0)
        drop = 2 * zero.sum(axis=1) > ok.sum(axis=1)
        ok &= ~(zero & drop[:, None])
    n = ok.sum(axis=1)
    bad = n < 2
    lo = (np.maximum(n, 1) - 1)[:, None] // 2
    hi = (n // 2)[:, None]
    s = np.sort(np.where(ok, v, np.inf), axis=1)
    med = 0.5 * (np.take_along_axis(s, lo, axis=1) + np.take_along_axis(s, hi, axis=1))
    med = np.where(bad[:, None], 0.0, med)  # keeps inf - inf out of the deviations
    cols = np.arange(v.shape[1])[None, :]
    dev = np.sort(np.where(cols < n[:, None], np.abs(s - med), np.inf), axis=1)
    mad = 0.5 * (np.take_along_axis(dev, lo, axis=1) + np.take_along_axis(dev, hi, axis=1))
    return np.where(bad, np.nan, med[:, 0]), np.where(bad, np.nan, mad[:, 0])

"""Per-channel median and MAD by selection, parallel over channels (the CPU fast path of noise).

Same numbers as the oracle :func:`cpu_fallback.noise.channel_mad` -- exactly: the order statistics
are the same values, found by selection instead of a full sort. Per channel, the ``n`` finite
pixels (with ``zero_as_blank``: without the zeros when they are more than half of them) give

``median = (s[(n-1)//2] + s[n//2]) / 2`` and ``MAD = median(|v - median|)`` the same way,

``s`` the sorted order. ``s[n//2]`` is one ``numpy.partition`` with a single ``kth`` (NumPy 2 uses
its SIMD selection there, x86-simd-sort on AVX-512 machines: about 10x a compiled scalar
quickselect, and 10x a two-``kth`` partition, which is what ``numpy.median`` and so
``astropy.stats.mad_std`` pay for an even count); for even ``n`` the lower middle is the largest
element left of it. The median is selected in the data type (float32: exact values), the
deviations are float64 as in the oracle. Channels are split into contiguous groups, one per
thread (:func:`cpu_fallback.compiled.runtime.job_threads`; NumPy releases the GIL); scratch
buffers are reused within a group. Channels with fewer than 2 usable pixels give NaN.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import NDArray

from cpu_fallback.compiled import runtime


def _median_of(a: np.ndarray) -> float:
    """Median of ``a`` (``len >= 1``; reordered in place): mean of the two middle values if even."""
    n = a.size
    hi = n // 2
    a.partition(hi)
    vhi = float(a[hi])
    if n % 2:
        return vhi
    return 0.5 * (float(a[:hi].max()) + vhi)


def _channels(cube: np.ndarray, zs: range, zero_as_blank: bool, med: np.ndarray, mad: np.ndarray) -> None:
    """Median and MAD of channels ``zs`` into ``med``/``mad``."""
    npix = cube.shape[1] * cube.shape[2]
    dev = np.empty(npix)
    for z in zs:
        plane = cube[z]
        vals = plane[np.isfinite(plane)]  # a copy, 1-D
        if zero_as_blank:
            nonzero = vals != 0
            if 2 * (vals.size - int(np.count_nonzero(nonzero))) > vals.size:
                vals = vals[nonzero]
        n = vals.size
        if n < 2:
            continue
        c = _median_of(vals)
        d = dev[:n]
        np.subtract(vals, c, out=d, dtype=np.float64)
        np.abs(d, out=d)
        med[z] = c
        mad[z] = _median_of(d)


def channel_mad(cube: np.ndarray, *, zero_as_blank: bool = False) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Median and unscaled MAD of the finite pixels of every channel (as :func:`cpu_fallback.noise.channel_mad`).

    Parameters
    ----------
    cube : numpy.ndarray
        ``(spectral, y, x)`` float32 or float64 cube (any strides), data units; NaN/inf are blank.
    zero_as_blank : bool, optional
        Drop a channel's zeros when they are more than half of its finite pixels.

    Returns
    -------
    median, mad : numpy.ndarray
        ``(nz,)`` float64, data units; ``sigma = 1.4826 * mad``. NaN for channels with < 2 pixels.

    Raises
    ------
    ValueError
        If ``cube`` is not a 3-D floating array.
    """
    a = np.asarray(cube)
    if a.ndim != 3 or a.dtype.kind != "f":
        raise ValueError(f"channel_mad expects a floating (spectral, y, x) cube, got {a.dtype} {a.shape}")
    nz = a.shape[0]
    med = np.full(nz, np.nan)
    mad = np.full(nz, np.nan)
    if a.size == 0:
        return med, mad
    groups = max(1, min(nz, runtime.job_threads(), a.size // runtime.MIN_VOXELS_PER_THREAD))
    bounds = [nz * g // groups for g in range(groups + 1)]
    parts = [range(bounds[g], bounds[g + 1]) for g in range(groups)]
    if groups == 1:
        _channels(a, parts[0], zero_as_blank, med, mad)
    else:
        with ThreadPoolExecutor(groups, thread_name_prefix="visivo-noise") as pool:
            for f in [pool.submit(_channels, a, zs, zero_as_blank, med, mad) for zs in parts]:
                f.result()
    return med, mad

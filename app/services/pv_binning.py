"""Binning of a PV diagram: the mean of the finite values of each block of rows × columns."""

from __future__ import annotations

import numpy as np


def bin_mean(a: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Mean of the finite values in blocks of ``factors[i]`` consecutive elements along axis ``i``.

    Along an axis of length ``n`` bin ``k`` covers elements ``k·f … min((k+1)·f, n) − 1`` (the
    last bin may be partial and averages what it has). A block is averaged as a whole -- the
    mean of all its finite values, not a mean of row means -- and is NaN without a finite value.
    All factors 1 return ``a`` unchanged. Sums in float64, result in ``a``'s dtype.

    Parameters
    ----------
    a : numpy.ndarray
        Array to bin (e.g. the ``(channels, positions)`` PV diagram, or a 1-D coordinate).
    factors : tuple of int
        Elements per bin along each axis of ``a``, each ``>= 1``.
    """
    if len(factors) != a.ndim or any(int(f) < 1 for f in factors):
        raise ValueError("one bin factor >= 1 per axis is needed")
    if all(int(f) == 1 for f in factors):
        return a
    x = np.asarray(a, dtype=np.float64)
    finite = np.isfinite(x)
    sums, counts = np.where(finite, x, 0.0), finite.astype(np.int64)
    for axis, f in enumerate(factors):
        starts = np.arange(0, a.shape[axis], int(f))
        sums = np.add.reduceat(sums, starts, axis=axis)
        counts = np.add.reduceat(counts, starts, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 0, sums / counts, np.nan)
    return out.astype(a.dtype)

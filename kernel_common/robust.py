"""Row median and median absolute deviation (MAD) of the finite values, for NumPy or CuPy.

For the ``n`` valid values ``x_1 <= ... <= x_n`` of a row (finite, and inside ``valid`` when
given): ``median = (x_lo + x_hi) / 2`` with ``lo = (n - 1) // 2``, ``hi = n // 2`` (the mean of
the two middle values for even ``n``), and ``MAD = median_i |x_i - median|`` by the same rule.
Both are computed by sorting (invalid entries are sorted last as ``+inf``), one row per
problem, no loop over rows. Robust sigma is ``MAD_TO_SIGMA * MAD``
(:data:`kernel_common.constants.MAD_TO_SIGMA`).
"""

from __future__ import annotations

from typing import Any


def _valid(xp: Any, v: Any, valid: Any | None) -> Any:
    ok = xp.isfinite(v)
    return ok if valid is None else ok & valid


def _middle(xp: Any, s: Any, n: Any) -> Any:
    """Mean of the two middle entries of the first ``n`` of each sorted row."""
    lo, hi = ((xp.maximum(n, 1) - 1) // 2)[:, None], (n // 2)[:, None]
    return 0.5 * (xp.take_along_axis(s, lo, 1) + xp.take_along_axis(s, hi, 1))[:, 0]


def row_median(v: Any, xp: Any, valid: Any | None = None) -> Any:
    """Median of the valid values of each row of ``v`` ``(k, m)``; NaN for a row without one.

    ``v``, ``xp`` and ``valid`` as for :func:`row_median_mad`; returns float ``(k,)`` medians in
    the unit of ``v`` (one sort, no deviations).
    """
    ok = _valid(xp, v, valid)
    n = ok.sum(axis=1)
    s = xp.sort(xp.where(ok, v, xp.inf), axis=1)
    return xp.where(n > 0, _middle(xp, s, n), xp.nan)


def row_median_mad(v: Any, xp: Any, valid: Any | None = None, min_count: int = 1) -> tuple[Any, Any]:
    """Median and unscaled MAD of the valid values of each row of ``v`` ``(k, m)``.

    Parameters
    ----------
    v : array
        ``(k, m)`` real values (float64 recommended).
    xp : module
        ``numpy`` or ``cupy``.
    valid : array of bool, optional
        ``(k, m)`` extra selection (AND-ed with ``isfinite(v)``).
    min_count : int, optional
        Rows with fewer valid values give NaN in both outputs. Default 1.

    Returns
    -------
    median, mad : array
        float ``(k,)`` in the unit of ``v``; ``sigma = 1.4826 * mad`` for Gaussian noise.
    """
    ok = _valid(xp, v, valid)
    n = ok.sum(axis=1)
    bad = n < max(1, int(min_count))
    s = xp.sort(xp.where(ok, v, xp.inf), axis=1)
    med = xp.where(bad, 0.0, _middle(xp, s, n))  # keeps inf - inf out of the deviations
    cols = xp.arange(v.shape[1])[None, :]
    dev = xp.sort(xp.where(cols < n[:, None], xp.abs(s - med[:, None]), xp.inf), axis=1)
    mad = _middle(xp, dev, n)
    return xp.where(bad, xp.nan, med), xp.where(bad, xp.nan, mad)


def row_median_mad_blank_zeros(v: Any, xp: Any, zero_as_blank: bool) -> tuple[Any, Any]:
    """:func:`row_median_mad` (at least 2 values) with an optional zero-blanking rule.

    With ``zero_as_blank``, a row whose finite values are more than half exact zeros (a
    zero-padded mosaic edge, not data) drops its zeros before the statistics.
    """
    ok = xp.isfinite(v)
    if zero_as_blank:
        zero = ok & (v == 0.0)
        drop = 2 * zero.sum(axis=1) > ok.sum(axis=1)
        ok &= ~(zero & drop[:, None])
    return row_median_mad(v, xp, valid=ok, min_count=2)


def plane_median_mad(cube: Any, xp: Any, *, zero_as_blank: bool, chunk_elements: int) -> tuple[Any, Any]:
    """Median and unscaled MAD of the finite pixels of every channel plane of a cube.

    Slabs of whole channels (about ``chunk_elements`` float64 values) become rows of a
    ``(k, ny*nx)`` array and go through :func:`row_median_mad_blank_zeros`; a channel with
    fewer than 2 usable pixels is NaN in both outputs.

    Parameters
    ----------
    cube : array
        ``(nz, ny, nx)`` real values (NumPy array, memmap, or CuPy array with ``xp = cupy``).
    xp : module
        ``numpy`` or ``cupy``.
    zero_as_blank : bool
        Drop exact zeros of a channel in which they are more than half the finite pixels.
    chunk_elements : int
        float64 elements per slab (bounds the temporaries).

    Returns
    -------
    median, mad : array
        float64 ``(nz,)`` in the data unit.
    """
    a = xp.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"channel_mad expects a (spectral, y, x) cube, got shape {a.shape}")
    nz, npix = a.shape[0], a.shape[1] * a.shape[2]
    median = xp.full(nz, xp.nan, dtype=xp.float64)
    mad = xp.full(nz, xp.nan, dtype=xp.float64)
    if nz == 0 or npix == 0:
        return median, mad
    rows = max(1, chunk_elements // npix)
    for z0 in range(0, nz, rows):
        block = xp.asarray(a[z0 : z0 + rows], dtype=xp.float64).reshape(-1, npix)
        k = block.shape[0]
        median[z0 : z0 + k], mad[z0 : z0 + k] = row_median_mad_blank_zeros(block, xp, zero_as_blank)
    return median, mad

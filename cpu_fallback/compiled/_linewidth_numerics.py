"""Scalar numerics of the compiled line-width kernel: selection (median, MAD) and a vectorisable ``exp``.

Part of :mod:`cpu_fallback.compiled.linewidth`; split out to keep modules small.

- :func:`kth` / :func:`median_mad`: order statistics by quickselect, the same *values* a sort gives
  (so the medians and MADs equal the oracle's, which sorts).
- :func:`vexp`: ``exp(x)`` for ``x <= 0`` without a library call, so that loops over a fit window
  vectorise (SIMD): Cody-Waite reduction ``x = k ln 2 + r`` (``|r| <= ln 2 / 2``, ``ln 2`` split in
  a high part exact in ``k ln2_hi`` and a low part), the degree-13 Taylor polynomial of ``e^r``
  (truncation ``< 5e-18`` relative) by Horner, and ``2^k`` built in the exponent bits. Within 1 ulp
  of NumPy's ``exp`` (measured over 1e6 arguments in ``[-60, 0]``; NumPy's own SIMD ``exp`` and the C
  library's differ by 1 ulp too); ``0`` below ``-708`` (where NumPy gives subnormals < 3.3e-308).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: Below this many values a selection finishes by insertion sort.
_SMALL = 16


@njit(cache=True, error_model="numpy")
def kth(a, n, k):  # noqa: C901
    """Rearrange ``a[:n]`` (no NaN, ``n >= 1``) so that ``a[k]`` is its ``k``-th smallest value, all before
    it ``<=`` and all after it ``>=``; returns ``a[k]``.

    Quickselect with a median-of-three pivot and a branch-free Lomuto partition (the swap is
    unconditional, the store index advances by the comparison: no mispredicted branches); a
    partition that leaves nothing below the pivot gathers the values equal to it next, so ties
    cost linear time; ranges of at most ``_SMALL`` values finish by insertion sort. Indices are
    unsigned, so numba adds no negative-index wraparound to the loads and stores (~30 % faster).
    """
    one = np.uint64(1)
    lo, hi, ku = np.uint64(0), np.uint64(n - 1), np.uint64(k)
    while hi > lo and hi - lo > np.uint64(_SMALL):
        mid = (lo + hi) >> one
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[mid] < a[hi]:  # the median of the three goes to a[hi]: the pivot
            a[mid], a[hi] = a[hi], a[mid]
        pivot = a[hi]
        store = lo
        i = lo
        while i < hi:
            x = a[i]
            a[i] = a[store]
            a[store] = x
            store += np.uint64(x < pivot)
            i += one
        a[hi] = a[store]
        a[store] = pivot
        if ku < store:  # then store > lo: no wrap
            hi = store - one
            continue
        if store == lo:  # nothing below the pivot: gather its ties before going on
            eq = store + one
            i = store + one
            while i <= hi:
                x = a[i]
                a[i] = a[eq]
                a[eq] = x
                eq += np.uint64(x == pivot)
                i += one
            if ku < eq:
                return pivot
            lo = eq
        elif ku == store:
            return pivot
        else:
            lo = store + one
    i = lo + one
    while i <= hi:
        x = a[i]
        j = i
        while j > lo and a[j - one] > x:
            a[j] = a[j - one]
            j -= one
        a[j] = x
        i += one
    return a[ku]


@njit(cache=True, error_model="numpy")
def median_mad(a, n):
    """Median and unscaled MAD of ``a[:n]`` (reordered; ``a`` float64 scratch, no NaN).

    ``median = (s[(n-1)//2] + s[n//2]) / 2`` of the sorted values ``s`` and the MAD by the same rule
    over ``|a - median|`` (:mod:`kernel_common.robust`); the order statistics are found by
    selection, so the values are exactly those of the oracle's sort. NaN when ``n == 0``.
    """
    if n == 0:
        return np.nan, np.nan
    k, h = (n - 1) // 2, n // 2
    lo = kth(a, n, k)
    hi = lo
    if h > k:
        hi = a[h]
        for i in range(h + 1, n):
            hi = min(hi, a[i])
    med = 0.5 * (lo + hi)
    for i in range(n):
        a[i] = abs(a[i] - med)
    dlo = kth(a, n, k)
    dhi = dlo
    if h > k:
        dhi = a[h]
        for i in range(h + 1, n):
            dhi = min(dhi, a[i])
    return med, 0.5 * (dlo + dhi)



@intrinsic
def _as_f64(typingctx, v):
    """The float64 whose bits are the int64 ``v`` (a register bitcast)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10
_C2, _C3, _C4, _C5, _C6, _C7, _C8, _C9, _C10, _C11, _C12, _C13 = (1.0 / math.factorial(i) for i in range(2, 14))


@njit(cache=True, inline="always", error_model="numpy")
def vexp(x):
    """``exp(x)`` for ``x <= 0`` (module docstring); branch-free, so loops of it vectorise."""
    xc = max(x, -708.0)
    kf = np.floor(xc * _LOG2E + 0.5)
    r = (xc - kf * _LN2_HI) - kf * _LN2_LO
    p = _C13 * r + _C12
    p = p * r + _C11
    p = p * r + _C10
    p = p * r + _C9
    p = p * r + _C8
    p = p * r + _C7
    p = p * r + _C6
    p = p * r + _C5
    p = p * r + _C4
    p = p * r + _C3
    p = p * r + _C2
    p = p * r + 1.0
    p = p * r + 1.0
    e = p * _as_f64((np.int64(kf) + 1023) << 52)
    return e if x >= -708.0 else 0.0



#: Relative margin of :func:`mad_decide`'s counting test (far above float64 rounding).
MARGIN = 1e-9


@njit(cache=True, error_model="numpy")
def mad_decide(a, n, t):
    """Whether the MAD of ``a[:n]`` (``n >= 1``, no NaN) is at most ``t`` (finite), mostly without computing it.

    Returns ``(1, nan)`` when ``MAD <= t (1 - MARGIN)`` for sure, ``(-1, nan)`` when ``MAD > t (1 + MARGIN)``
    for sure, else ``(0, MAD)`` with the exact MAD (:func:`median_mad`'s value). The median is selected
    exactly; then one counting pass over the deviations ``d_i = |a_i - median|`` decides: with ``k, h``
    the middle ranks (``MAD = (d_(k) + d_(h)) / 2``), at least ``h + 1`` deviations ``<= t (1 - MARGIN)``
    put both middle ones below, at most ``k`` deviations ``<= t (1 + MARGIN)`` put both above. A
    caller comparing ``MAD`` with ``t`` in floating point gets the same answer either way (its
    rounding is ~1e-16). ``a[:n]`` becomes the deviations.
    """
    k, h = (n - 1) // 2, n // 2
    lo = kth(a, n, k)
    hi = lo
    if h > k:
        hi = a[h]
        for i in range(h + 1, n):
            hi = min(hi, a[i])
    med = 0.5 * (lo + hi)
    tl, th = t * (1.0 - MARGIN), t * (1.0 + MARGIN)
    c1 = c2 = 0
    for i in range(n):
        d = abs(a[i] - med)
        a[i] = d
        c1 += d <= tl
        c2 += d <= th
    if c1 > h:
        return 1, np.nan
    if c2 <= k:
        return -1, np.nan
    dlo = kth(a, n, k)
    dhi = dlo
    if h > k:
        dhi = a[h]
        for i in range(h + 1, n):
            dhi = min(dhi, a[i])
    return 0, 0.5 * (dlo + dhi)

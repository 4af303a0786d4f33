"""CASA ``immoments`` moments 3 (median) and 4 (median coordinate), compiled, from raw FITS data.

Same definitions, float32 arithmetic, pixel selection and blanking as the oracle
(:func:`cpu_fallback.casa_moments.casa_moment_maps`, its ``_median`` and ``_median_coord``):

- moment 3, casacore ``median`` of the ``n`` kept values: the element of rank ``k = (n - 1) // 2``
  (0-based, ascending); if ``n`` is even and ``n <= 100``, ``(x_(k) + x_(k+1)) * 0.5`` in float32;
- moment 4: the coordinate of the first kept channel where the float32 running sum
  ``c = |x|`` (first kept voxel), ``c = x + |c|`` (later ones) reaches ``max(c) / 2``.

A pixel with no kept voxel is NaN. The numbers are the oracle's exactly (selection returns the
same order statistics as its sort; the running sum is the same float32 sequence).

Algorithm. ``prange`` over rows ``y``: the row's ``nz x nx`` voxels are decoded once from the
stored bytes (:mod:`cpu_fallback.compiled.rawdata`) into a float32 scratch block. Medians: the
block is transposed 16 pixels at a time into contiguous spectra, the kept values of a spectrum
are gathered, and Hoare's quickselect (median-of-three pivot, in place) finds rank ``k`` in
``O(n)``, not the oracle's ``O(n log n)`` sort; rank ``k + 1``, when needed, is the smallest value
right of ``k`` after the selection. Median coordinate: two passes over the block, vectorised
over ``x`` (the running maximum, then the first channel reaching half of it).
Scratch per thread: ``2 nz nx`` float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from cpu_fallback.compiled.rawdata import kept, row_source, scratch, value

#: Pixels transposed into contiguous spectra at a time (one cache line of float32 per channel).
TILE = 16


@njit(cache=True)
def select_rank(a, n, k):
    """Rearrange ``a[:n]`` so that ``a[k]`` holds the value of rank ``k`` (0-based), everything left
    of it ``<=`` and everything right of it ``>=``; return it (Hoare's quickselect, in place)."""
    lo, hi = 0, n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        p0, p1, p2 = a[lo], a[mid], a[hi]  # median of three as the pivot
        pivot = max(min(p0, p1), min(max(p0, p1), p2))
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:  # j < k < i: a[k] equals the pivot
            break
    return a[k]


@njit(cache=True)
def _medians(blk, y, sel, out, slot_med):
    """Moment 3 of every pixel of one decoded row block ``blk (nz, nx)`` into ``out[slot_med, y]``."""
    nz, nx = blk.shape
    lo, hi, xlo, xhi = sel[0], sel[1], sel[2], sel[3]
    cols = np.empty((TILE, nz), np.float32)
    kv = np.empty(nz, np.float32)
    for x0 in range(0, nx, TILE):
        m = min(TILE, nx - x0)
        for z in range(nz):
            for i in range(m):
                cols[i, z] = blk[z, x0 + i]
        for i in range(m):
            n = 0
            for z in range(nz):
                e = cols[i, z]
                if kept(np.float64(e), lo, hi, xlo, xhi):
                    kv[n] = e
                    n += 1
            if n == 0:
                out[slot_med, y, x0 + i] = np.float32(np.nan)
                continue
            k = (n - 1) // 2
            val = select_rank(kv, n, k)
            if n % 2 == 0 and n <= 100:
                nxt = kv[k + 1]
                for j in range(k + 2, n):
                    nxt = min(nxt, kv[j])
                val = (val + nxt) * np.float32(0.5)
            out[slot_med, y, x0 + i] = val


@njit(cache=True)
def _median_coords(blk, y, v, sel, out, slot_coord):
    """Moment 4 of every pixel of one decoded row block into ``out[slot_coord, y]``."""
    nz, nx = blk.shape
    lo, hi, xlo, xhi = sel[0], sel[1], sel[2], sel[3]
    c = np.zeros(nx, np.float32)
    top = np.full(nx, -np.inf, np.float32)
    started = np.zeros(nx, np.bool_)
    for z in range(nz):
        for x in range(nx):
            e = blk[z, x]
            k = kept(np.float64(e), lo, hi, xlo, xhi)
            nxt = e + abs(c[x]) if started[x] else abs(e)
            cz = nxt if k else c[x]
            c[x] = cz
            started[x] = started[x] | k
            top[x] = max(top[x], cz) if k else top[x]
    half = top / np.float32(2.0)
    first = np.full(nx, -1, np.int64)
    c[:] = 0.0
    started[:] = False
    for z in range(nz):
        for x in range(nx):
            e = blk[z, x]
            k = kept(np.float64(e), lo, hi, xlo, xhi)
            nxt = e + abs(c[x]) if started[x] else abs(e)
            cz = nxt if k else c[x]
            c[x] = cz
            started[x] = started[x] | k
            first[x] = z if (first[x] < 0) & k & (cz >= half[x]) else first[x]
    for x in range(nx):
        out[slot_coord, y, x] = np.float32(np.nan) if first[x] < 0 else np.float32(v[first[x]])


@njit(parallel=True, cache=True)
def kernel(flat, geo, dec, mode, v, sel, slot_med, slot_coord, out):
    """Moments 3 (``slot_med >= 0``) and 4 (``slot_coord >= 0``) of a raw block into ``out[slot, y, x]``.

    ``sel = (lo, hi, xlo, xhi)``: the voxel selection of :func:`cpu_fallback.compiled.rawdata.kept`.
    """
    nz, ny, nx, sz, sy, sx = geo
    for y in prange(ny):
        buf = scratch(flat, nx)
        blk = np.empty((nz, nx), np.float32)
        for z in range(nz):
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            for x in range(nx):
                blk[z, x] = value(mode, row, x)
        if slot_med >= 0:
            _medians(blk, y, sel, out, slot_med)
        if slot_coord >= 0:
            _median_coords(blk, y, v, sel, out, slot_coord)

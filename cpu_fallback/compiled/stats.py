"""CASA ``imstat`` statistics of a region, compiled: one pass for the sums, one for the order statistics.

Same keys, definitions and numbers as the oracle :func:`cpu_fallback.stats.region_stats` (its
docstring has the definitions): the finite pixels of a ``(z, y, x)`` block inside a spatial mask,
read straight from the stored FITS data (:mod:`cpu_fallback.compiled.rawdata`: byte order,
BSCALE/BZERO/BLANK applied inline; no float32, float64 or sorted copy of the region).

Algorithm. Rows ``r = z ny + y`` are taken in pieces of about :data:`PIECE_BYTES` of file (whole
planes, or rows of one plane; after each piece a pass may hand it to ``release``, e.g. to unmap the
memmap pages just read), each piece split into one contiguous unit of rows per thread (``prange``).

1. **First pass**: per row the count, ``S = sum x`` and ``Q = sum x^2`` (float64) and the extreme
   *order keys* (the float32 bit pattern as a signed integer with the low 31 bits flipped for
   negative values: ordered as the values); per thread a 65536-bin histogram of the keys' top 16
   bits (``bin = (key >> 16) + 32768``). Rows are reduced in C order, so ``minpos``/``maxpos`` are
   the first occurrences, as CASA reports them.
2. The ranks the median and quartiles need (``(n-1)//2``, ``n//2``, ``ceil(n/4)-1``,
   ``ceil(3n/4)-1``) lie in known bins of the cumulative histogram. ``medabsdevmed`` is the
   median of ``d = |x - median|``: with the median known to lie in ``[c_lo, c_hi]`` (the edges of
   its bins), each bin ``[lo, hi]`` bounds the deviations of its values by
   ``D_lo = dist([lo, hi], [c_lo, c_hi])`` and ``D_hi = max(c_hi - lo, hi - c_lo)``. For a rank
   ``k``, ``A`` = the smallest ``D_lo`` at which the bins *possibly* within reach hold more than
   ``k`` values and ``B`` = the smallest ``D_hi`` at which the bins *surely* within reach do, so
   ``A <= d_(k) <= B``: bins with ``D_hi < A`` are wholly below (counted), bins with ``D_lo > B``
   wholly above, and only the bins in between (a handful) hold candidates.
3. **Second pass**: the values of the marked bins (rank bins and deviation band) are copied out
   (into room for every voxel that only the copies touch);
   ``numpy.partition`` selects each rank inside its bin, and the deviation ranks among the
   band's deviations (offset by the count below).

Numerics. The order statistics are the values the oracle's sorted runs give, bit for bit
(deviations in float64 as the oracle, ``|x - median|``); ``S`` and ``Q`` are float64 sums in a
different order (vectorised lanes), so ``sum``/``sumsq``/``mean``/``sigma``/``rms`` agree to
float64 rounding (tests: ``1e-12`` relative). Everything in one bin (a constant image) is still
exact, only the selection is larger.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload
from numpy.typing import ArrayLike

from cpu_fallback.compiled import runtime
from cpu_fallback.compiled.rawdata import FMAX, raw_args, row_source, scratch, value
from kernel_common.imstat import empty_partial, scalar_stats

#: Histogram bins (the top 16 bits of the order key).
NBINS = 1 << 16
#: Elements per thread group at most (the histograms count in int32).
_GROUP_MAX = 1 << 30
_KMAX, _KMIN = np.int32(2**31 - 1), np.int32(-(2**31))
#: Stored bytes (file span) per piece of a pass: between pieces ``release`` may unmap what was read.
PIECE_BYTES = 8 << 20
#: Values handled at a time when the selected ones are turned into float64 deviations.
_CHUNK = 1 << 18


@intrinsic
def _bits32(typingctx, v):
    """The int32 bit pattern of the float32 ``v`` (a register bitcast)."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@njit(cache=True, inline="always")
def _okey(e):
    """Signed order key of the float32 ``e``: ordered as the values (``-0.0`` just below ``+0.0``)."""
    s = _bits32(e)
    return s ^ ((s >> np.int32(31)) & np.int32(0x7FFFFFFF))


def _inmask(mask, y, x):  # pragma: no cover - replaced by the overload inside compiled code
    raise NotImplementedError


@overload(_inmask, inline="always")
def _ov_inmask(mask, y, x):
    """``mask[y, x]``, or True without a mask (``None``: a specialisation without the load)."""
    if isinstance(mask, types.NoneType):
        return lambda mask, y, x: True
    return lambda mask, y, x: mask[y, x]


@njit(cache=True, inline="always")
def _bin(key):
    """Histogram bin (0 .. 65535) of an order key: its top 16 bits."""
    return (key >> np.int32(16)) + np.int32(32768)


@njit(parallel=True, cache=True, fastmath={"reassoc"})
def _scan(flat, geo, dec, mode, mask, lo, hi, rn, rs, rq, rkmin, rkmax, hist):
    """Pass 1: per-row count, ``sum x``, ``sum x^2`` and extreme order keys; key histogram ``hist[g]``
    of unit ``g`` (rows ``lo[g]:hi[g]``, one thread each) added to.

    ``reassoc`` lets the sums vectorise (lanes of partial sums: float64 rounding differs from a
    serial sum); every comparison stays exact.
    """
    nz, ny, nx, sz, sy, sx = geo
    for g in prange(lo.size):
        buf = scratch(flat, nx)
        h = hist[g]
        for r in range(lo[g], hi[g]):
            z = r // ny
            y = r - z * ny
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            n = 0
            s = 0.0
            q = 0.0
            kmn = _KMAX
            kmx = _KMIN
            for x in range(nx):
                e = value(mode, row, x)
                d = np.float64(e)
                k = (d >= -FMAX) & (d <= FMAX) & _inmask(mask, y, x)
                t = d if k else 0.0
                n += k
                s += t
                q += t * t
                kk = _okey(e)
                kmn = min(kmn, kk if k else _KMAX)
                kmx = max(kmx, kk if k else _KMIN)
            for x in range(nx):
                e = value(mode, row, x)
                d = np.float64(e)
                k = (d >= -FMAX) & (d <= FMAX) & _inmask(mask, y, x)
                h[_bin(_okey(e))] += np.int32(k)
            rn[r], rs[r], rq[r], rkmin[r], rkmax[r] = n, s, q, kmn, kmx


@njit(parallel=True, cache=True)
def _collect(flat, geo, dec, mode, mask, lo, hi, table, start, written, out):
    """Pass 2: copy the kept values whose bin is marked in ``table`` to ``out[start[g]:]`` (unit ``g``);
    ``written[g]``: how many."""
    nz, ny, nx, sz, sy, sx = geo
    for g in prange(lo.size):
        buf = scratch(flat, nx)
        pos = start[g]
        for r in range(lo[g], hi[g]):
            z = r // ny
            y = r - z * ny
            row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, buf)
            for x in range(nx):
                e = value(mode, row, x)
                d = np.float64(e)
                if (d >= -FMAX) & (d <= FMAX) & _inmask(mask, y, x) & table[_bin(_okey(e))]:
                    out[pos] = e
                    pos += 1
        written[g] = pos - start[g]


@njit(cache=True)
def _first(flat, geo, dec, mode, mask, r, target):
    """First ``x`` of row ``r`` whose kept value equals ``target`` (-1 if none)."""
    nz, ny, nx, sz, sy, sx = geo
    z = r // ny
    y = r - z * ny
    row = row_source(mode, flat, z * sz + y * sy, sx, nx, dec, scratch(flat, nx))
    for x in range(nx):
        e = value(mode, row, x)
        if e == target and _inmask(mask, y, x):
            return x
    return -1


def _key_values(keys: np.ndarray) -> np.ndarray:
    """float64 values of int32 order keys (the key map is its own inverse)."""
    k = np.asarray(keys, dtype=np.int32)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(np.float32).astype(np.float64)


def _bin_edges(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest and largest value (float64) of each histogram bin."""
    lo = (bins.astype(np.int64) - 32768) << 16
    return _key_values(lo), _key_values(lo | 0xFFFF)


def _pieces(raw: np.ndarray, piece_bytes: int) -> list[tuple[int, int, int, int]]:
    """``(z0, z1, y0, y1)`` pieces of the block in C order: whole planes, or rows of one plane, of about
    ``piece_bytes`` of file span each."""
    nz, ny, _ = raw.shape
    plane = max(1, abs(raw.strides[0]) if nz > 1 else ny * abs(raw.strides[1]))
    if plane <= piece_bytes or ny <= 1:
        step = max(1, piece_bytes // plane)
        return [(z, min(z + step, nz), 0, ny) for z in range(0, nz, step)] or [(0, 0, 0, ny)]
    rows = max(1, piece_bytes // max(1, abs(raw.strides[1])))
    return [(z, z + 1, y, min(y + rows, ny)) for z in range(nz) for y in range(0, ny, rows)]


def _units(pieces: list[tuple[int, int, int, int]], ny: int, groups: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Row ranges ``lo[u]:hi[u]`` (rows ``r = z ny + y``): each piece cut into ``groups`` units, one per
    thread, and the unit range ``(u0, u1)`` of every piece."""
    lo: list[int] = []
    hi: list[int] = []
    units = []
    for z0, z1, y0, y1 in pieces:
        first, last = (z0 * ny, z1 * ny) if y1 - y0 == ny else (z0 * ny + y0, z0 * ny + y1)
        count = max(1, min(groups, last - first))
        u0 = len(lo)
        for g in range(count):
            lo.append(first + (last - first) * g // count)
            hi.append(first + (last - first) * (g + 1) // count)
        units.append((u0, len(lo)))
    return np.array(lo, np.int64), np.array(hi, np.int64), units


def _middle(values: dict[int, Any], n: int) -> float:
    """Median from the selected ranks: middle value, or the mean of the two middle values."""
    if n % 2:
        return float(values[(n - 1) // 2])
    return 0.5 * (float(values[n // 2 - 1]) + float(values[n // 2]))


def _deviation_band(total: np.ndarray, k1: int, k2: int, c_lo: float, c_hi: float) -> tuple[np.ndarray, int]:
    """Bins that may hold deviation ranks ``k1..k2`` (module docstring, step 2) and the count below them."""
    nzb = np.flatnonzero(total)
    counts = total[nzb]
    lo, hi = _bin_edges(nzb)
    d_lo = np.where(hi < c_lo, c_lo - hi, np.where(lo > c_hi, lo - c_hi, 0.0)) * (1.0 - 1e-9)
    d_hi = np.maximum(c_hi - lo, hi - c_lo) * (1.0 + 1e-9)
    by_lo = np.argsort(d_lo, kind="stable")
    a = d_lo[by_lo][int(np.searchsorted(np.cumsum(counts[by_lo]), k1, side="right"))]
    by_hi = np.argsort(d_hi, kind="stable")
    b = d_hi[by_hi][int(np.searchsorted(np.cumsum(counts[by_hi]), k2, side="right"))]
    below = d_hi < a
    return nzb[~below & (d_lo <= b)], int(counts[below].sum())


def region_stats_raw(
    raw: np.ndarray,
    mask: ArrayLike | None = None,
    *,
    origin: tuple[int, int, int] = (0, 0, 0),
    bscale: float = 1.0,
    bzero: float = 0.0,
    blank: int | None = None,
    release: Callable[[np.ndarray], None] | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> dict[str, Any]:
    """CASA ``imstat`` statistics of the finite, in-mask pixels of a stored block (module docstring).

    Parameters
    ----------
    raw : numpy.ndarray
        ``(nz, ny, nx)`` view of the data as stored (any byte order, scaled integers allowed,
        non-negative strides), e.g. the region's bounding box of a FITS memmap; data units after
        scaling (e.g. Jy/beam). A native float32 block works too. Not copied.
    mask : array_like of bool, optional
        ``(ny, nx)`` region mask applied to every plane (``None``: every pixel).
    origin : tuple of int, optional
        Absolute ``(z, y, x)`` of ``raw[0, 0, 0]``, for ``minpos``/``maxpos``.
    bscale, bzero, blank
        FITS scaling and integer blank value (:func:`cpu_fallback.compiled.rawdata.raw_args`).
    release : callable, optional
        Called with each piece of ``raw`` (whole planes, or rows of one plane, about
        ``piece_bytes`` of file each) once a pass is done with it, e.g. to unmap the memmap pages
        just read (:meth:`app.io.fits_reader.CubeSource.release`), so a region across many
        channels of a big cube does not keep the file's pages in the resident set.
    piece_bytes : int, optional
        Stored bytes per piece (default :data:`PIECE_BYTES`).

    Returns
    -------
    dict
        As :func:`cpu_fallback.stats.stats_finalize`: ``npts, sum, sumsq, mean, sigma, rms, min,
        max, median, medabsdevmed, q1, q3, quartile`` and ``minpos``/``maxpos`` (absolute
        ``(z, y, x)``); NaN statistics and ``(-1, -1, -1)`` positions without a finite pixel.
        Also ``channel_sum`` (float64 ``(nz,)``: ``sum x`` per plane, data units x pixel) and
        ``channel_npts`` (int64 ``(nz,)``), as :func:`cpu_fallback.region_flux.channel_sums`.

    Raises
    ------
    ValueError
        Not 3-D, a mask of the wrong shape, or an unsupported stored data type.
    """
    if getattr(raw, "ndim", 0) != 3:
        raise ValueError(f"expected a (spectral, y, x) block, got shape {getattr(raw, 'shape', None)}")
    nz, ny, nx = raw.shape
    m = None if mask is None else np.ascontiguousarray(mask, dtype=np.bool_)
    if m is not None and m.shape != (ny, nx):
        raise ValueError(f"mask shape {m.shape} does not match block planes {(ny, nx)}")
    args = raw_args(raw, bscale, bzero, blank)
    nrows = nz * ny
    rn = np.zeros(nrows, np.int64)
    rs = np.zeros(nrows)
    rq = np.zeros(nrows)
    rkmin = np.full(nrows, _KMAX, np.int32)
    rkmax = np.full(nrows, _KMIN, np.int32)
    with runtime.threads(raw.size):
        import numba  # noqa: PLC0415 - after runtime has set the cache directory

        pieces = _pieces(raw, piece_bytes)
        groups = max(1, numba.get_num_threads(), -(-raw.size // len(pieces) // _GROUP_MAX))
        lo, hi, units = _units(pieces, ny, groups)
        common = (args.flat, args.geo, args.dec, args.mode, m)
        hist = np.zeros((groups, NBINS), np.int32)  # one per thread, added to piece after piece
        for (z0, z1, y0, y1), (u0, u1) in zip(pieces, units, strict=True):
            _scan(*common, lo[u0:u1], hi[u0:u1], rn, rs, rq, rkmin, rkmax, hist[: u1 - u0])
            if release is not None:
                release(raw[z0:z1, y0:y1])
        n = int(rn.sum())
        sums = {"channel_sum": rs.reshape(nz, ny).sum(axis=1), "channel_npts": rn.reshape(nz, ny).sum(axis=1)}
        if n == 0:
            out = scalar_stats(empty_partial())
            out.update(median=math.nan, q1=math.nan, q3=math.nan, quartile=math.nan, medabsdevmed=math.nan)
            return {**out, **sums}
        partial: dict[str, Any] = {"npts": n, "sum": float(rs.sum()), "sumsq": float(rq.sum())}
        for key, keys, pick in (("min", rkmin, np.min), ("max", rkmax, np.max)):
            target = np.float32(_key_values(np.array([pick(keys)]))[0])  # -0.0 == 0.0: first of either
            r = int(np.flatnonzero((rn > 0) & (_key_values(keys) == target))[0])
            x = int(_first(*common, r, target))
            z, y = divmod(r, ny)
            partial[key], partial[key + "pos"] = float(target), (origin[0] + z, origin[1] + y, origin[2] + x)
        out = scalar_stats(partial)
        total = hist.sum(axis=0, dtype=np.int64)
        cum = np.cumsum(total)
        q1r, q3r, mlo, mhi = math.ceil(n / 4) - 1, math.ceil(3 * n / 4) - 1, (n - 1) // 2, n // 2
        where = {k: int(np.searchsorted(cum, k, side="right")) for k in {q1r, q3r, mlo, mhi}}
        c_lo, c_hi = _bin_edges(np.array([where[mlo]]))[0][0], _bin_edges(np.array([where[mhi]]))[1][0]
        band, below = _deviation_band(total, mlo, mhi, float(c_lo), float(c_hi))
        table = np.zeros(NBINS, np.bool_)
        table[band] = True
        table[list(where.values())] = True
        start = np.concatenate(([0], np.cumsum((hi - lo) * nx)[:-1]))  # room for every voxel of a unit
        written = np.zeros(lo.size, np.int64)
        room = np.empty(nrows * nx, np.float32)  # virtual: only the copied values touch its pages
        for (z0, z1, y0, y1), (u0, u1) in zip(pieces, units, strict=True):
            _collect(*common, lo[u0:u1], hi[u0:u1], table, start[u0:u1], written[u0:u1], room)
            if release is not None:
                release(raw[z0:z1, y0:y1])
        top = 0
        for a, w in zip(start, written, strict=True):  # compact in place: no second copy of the values
            room[top : top + w] = room[a : a + w]
            top += int(w)
        found = room[:top]
    kb = found.view(np.int32) >> 31  # the bin of each value (int32, computed in place)
    kb &= 0x7FFFFFFF
    kb ^= found.view(np.int32)
    kb >>= 16
    kb += 32768
    vals: dict[int, Any] = {}
    for k, b in where.items():
        part = found[kb == b]
        j = k - int(cum[b] - total[b])
        part.partition(j)
        vals[k] = part[j] + np.float32(0.0)  # -0.0 -> 0.0
    median = _middle(vals, n)
    in_band = np.zeros(NBINS, np.bool_)
    in_band[band] = True
    take = in_band[kb]
    del kb
    dev = np.empty(int(np.count_nonzero(take)))
    filled = 0
    for i in range(0, found.size, _CHUNK):  # float64 deviations without a float32 copy of the band
        piece = found[i : i + _CHUNK][take[i : i + _CHUNK]]
        np.subtract(piece, median, out=dev[filled : filled + piece.size], dtype=np.float64)
        filled += piece.size
    np.abs(dev, out=dev)
    devs: dict[int, Any] = {}
    for k in sorted({mlo, mhi}):
        dev.partition(k - below)
        devs[k] = dev[k - below]
    q1, q3 = float(vals[q1r]), float(vals[q3r])
    out.update(median=median, q1=q1, q3=q3, quartile=q3 - q1, medabsdevmed=_middle(devs, n))
    return {**out, **sums}

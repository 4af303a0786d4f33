"""Reading FITS data as stored: byte order, BSCALE/BZERO/BLANK applied inline, row by row.

A FITS data block is big-endian and may hold scaled integers. The compiled kernels read it in
place: :func:`raw_args` describes a ``(nz, ny, nx)`` view of the memmap (any byte order, any
non-negative strides) as a flat native *unsigned* integer array of the same item size plus
element strides, and :func:`load_row` turns the ``nx`` voxels of one ``(z, y)`` row into native
float32 in a scratch row: bytes swapped in registers, reinterpreted as the stored type, then

``value = float32(raw)``; ``NaN`` where an integer ``raw == BLANK``; ``value *= float32(BSCALE)``
(if ``BSCALE != 1``); ``value += float32(BZERO)`` (if ``BZERO != 0``),

exactly the float32 arithmetic of :meth:`app.io.fits_reader.CubeSource.read`, so a compiled
kernel sees the values the NumPy oracle sees. Contiguous unscaled float32 rows (the usual
``BITPIX = -32`` cube) skip the scratch row: :func:`row_source` hands the kernel the raw slice and
:func:`value` swaps and bitcasts each voxel inside the kernel's own loops. No native-order or float
copy of the cube is made: the only scratch is one row per thread.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

#: FITS data kinds: IEEE float, signed integer, unsigned integer (BITPIX 8).
KIND_FLOAT, KIND_SIGNED, KIND_UNSIGNED = 0, 1, 2


#: Read modes, told to the kernels by the dtype of an empty marker array (numba compiles one
#: specialisation per mode): contiguous unscaled float32 rows are decoded inside the
#: accumulation loops (big-endian: swapped; native: as is); everything else goes through a
#: decoded float32 scratch row (:func:`load_row`).
MODE_BE_F32, MODE_NATIVE_F32, MODE_ROW = np.float32, np.float64, np.uint8


class RawArgs(NamedTuple):
    """A raw block as the kernels take it (see :func:`raw_args`)."""

    flat: np.ndarray  # 1-D read-only native uint view, starting at voxel (0, 0, 0)
    geo: tuple[int, int, int, int, int, int]  # nz, ny, nx and the element strides sz, sy, sx
    dec: tuple  # swap, kind, float32 scale, float32 zero, scale?, zero?, blank, blank?
    mode: np.ndarray  # empty marker array whose dtype is the read mode


def raw_args(raw: np.ndarray, bscale: float = 1.0, bzero: float = 0.0, blank: int | None = None) -> RawArgs:
    """Describe a ``(nz, ny, nx)`` view of stored FITS data for the compiled kernels (no copy).

    Parameters
    ----------
    raw : numpy.ndarray
        The data as stored (e.g. ``>f4``, ``>i2``), any byte order, non-negative strides that are
        multiples of the item size (a memmap slice or transposed view is fine).
    bscale, bzero : float
        FITS scaling, ``value = raw * bscale + bzero`` (float32 arithmetic, as the reader does).
    blank : int or None
        The integer ``BLANK`` value (integer data only); such voxels are NaN.

    Returns
    -------
    RawArgs

    Raises
    ------
    ValueError
        Not 3-D, negative or unaligned strides, or a data type that FITS does not store.
    """
    if raw.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) block, got shape {raw.shape}")
    dt = raw.dtype
    k = dt.itemsize
    kind = {"f": KIND_FLOAT, "i": KIND_SIGNED, "u": KIND_UNSIGNED}.get(dt.kind)
    if kind is None or k not in (1, 2, 4, 8) or (kind == KIND_FLOAT and k < 4):
        raise ValueError(f"unsupported FITS data type {dt}")
    if any(s < 0 or s % k for s in raw.strides):
        raise ValueError("the raw block needs non-negative strides that are multiples of the item size")
    nz, ny, nx = (int(n) for n in raw.shape)
    sz, sy, sx = (int(s) // k for s in raw.strides)
    sx = 1 if nx == 1 else sx  # a single column's stride is free (e.g. 0 for a broadcast axis)
    if sx == 0:
        raise ValueError("the raw block's x axis is broadcast (stride 0); pass a copy")
    u = raw.view(np.dtype(f"u{k}"))  # same bytes, native unsigned integers
    n = 0 if raw.size == 0 else 1 + (nz - 1) * sz + (ny - 1) * sy + (nx - 1) * sx
    flat = np.lib.stride_tricks.as_strided(u, shape=(n,), strides=(k,), writeable=False)
    has_blank = blank is not None and kind != KIND_FLOAT
    dec = (not dt.isnative and k > 1, kind, np.float32(bscale), np.float32(bzero),
           bool(bscale != 1.0), bool(bzero != 0.0), int(blank) if has_blank else 0, bool(has_blank))
    fused = kind == KIND_FLOAT and k == 4 and sx == 1 and not dec[4] and not dec[5]
    mode = (MODE_BE_F32 if dec[0] else MODE_NATIVE_F32) if fused else MODE_ROW
    return RawArgs(flat, (nz, ny, nx, sz, sy, sx), dec, np.empty(0, mode))


#: Pixels per kernel row after :func:`group_rows` (at most; measured best for 512² and 1024² planes).
GROUP_PIXELS = 8192


def group_rows(raw: np.ndarray, target: int = GROUP_PIXELS) -> tuple[np.ndarray, int]:
    """View ``r`` consecutive image rows as one kernel row, ``(nz, ny // r, nx * r)``, when rows are
    contiguous in each plane; ``r`` is the largest divisor of ``ny`` with ``r * nx <= target``.

    A per-pixel kernel gives the same numbers on either view (a pixel's result depends only on its
    spectrum), but long rows read each plane in long contiguous runs: on a 512x512x256 cube 8192
    pixels per row instead of 512 cut the kernels' time by 10-25 %. Returns ``(view, r)``; ``r = 1``
    (the block itself) when the rows are not contiguous or ``ny`` has no suitable divisor.
    """
    nz, ny, nx = raw.shape
    k = raw.itemsize
    if ny <= 1 or nx * k == 0 or raw.strides[2] != k or raw.strides[1] != nx * k:
        return raw, 1
    r = max((d for d in range(1, min(ny, max(1, target // nx)) + 1) if ny % d == 0), default=1)
    if r == 1:
        return raw, 1
    view = np.lib.stride_tricks.as_strided(raw, (nz, ny // r, nx * r), (raw.strides[0], raw.strides[1] * r, k),
                                           writeable=False)
    return view, r


#: Typed shift counts and masks: integer literals would promote the arithmetic to int64 and
#: keep LLVM from recognising (and vectorising) the byte swap.
_S8_16 = np.uint16(8)
_S8, _S24 = np.uint32(8), np.uint32(24)
_B0, _B1 = np.uint32(0xFF), np.uint32(0xFF00)


def _bswap(v):  # pragma: no cover - replaced by the overload inside compiled code
    raise NotImplementedError


@overload(_bswap, inline="always")
def _ov_bswap(v):
    """Byte swap of a native unsigned integer (LLVM turns the shifts into ``bswap``)."""
    if v == types.uint8:
        return lambda v: v
    if v == types.uint16:
        return lambda v: (v >> _S8_16) | (v << _S8_16)
    if v == types.uint32:
        return lambda v: ((v >> _S24) & _B0) | ((v >> _S8) & _B1) | ((v & _B1) << _S8) | ((v & _B0) << _S24)
    if v == types.uint64:

        def swap64(v):
            lo = np.uint64(_bswap(np.uint32(v & np.uint64(0xFFFFFFFF))))
            hi = np.uint64(_bswap(np.uint32(v >> np.uint64(32))))
            return (lo << np.uint64(32)) | hi

        return swap64
    return None


def _scratch(flat, nx):  # pragma: no cover - replaced by the overload inside compiled code
    raise NotImplementedError


@overload(_scratch)
def _ov_scratch(flat, nx):
    """Scratch of one row for ``flat``'s item type: (native raw, float view, signed view, float32 row,
    direct); for 4-byte data the raw row *is* the float32 row (``direct``: no float copy)."""
    dt = flat.dtype
    if dt == types.uint32:

        def four(flat, nx):
            row = np.empty(nx, np.float32)
            nat = row.view(np.uint32)
            return nat, row, nat.view(np.int32), row, True

        return four
    if dt == types.uint64:

        def eight(flat, nx):
            nat = np.empty(nx, np.uint64)
            return nat, nat.view(np.float64), nat.view(np.int64), np.empty(nx, np.float32), False

        return eight
    if dt == types.uint16:

        def two(flat, nx):
            nat = np.empty(nx, np.uint16)
            return nat, np.empty(0, np.float32), nat.view(np.int16), np.empty(nx, np.float32), False

        return two
    if dt == types.uint8:

        def one(flat, nx):
            nat = np.empty(nx, np.uint8)
            return nat, np.empty(0, np.float32), nat.view(np.int8), np.empty(nx, np.float32), False

        return one
    return None


@njit(cache=True)
def scratch(flat, nx):
    """Per-thread scratch of one row: ``(nat, fview, sview, row, direct)`` (see :func:`load_row`)."""
    return _scratch(flat, nx)


@njit(cache=True)
def load_row(flat, base, sx, nx, dec, buf):
    """Decode the ``nx`` voxels at ``flat[base + x*sx]`` into the float32 row ``buf[3]`` (module docstring).

    ``buf`` is :func:`scratch`'s tuple: the bytes are swapped into the native row ``nat``, read
    through its float or signed view (or as unsigned), blanked, scaled and written to ``row``.
    """
    nat, fview, sview, row, direct = buf
    swap, kind, scale, zero, do_scale, do_zero, blank, has_blank = dec
    # index slices with the range variable: an index known to be >= 0 needs no wraparound
    # fix-up, so the loads stay contiguous vector loads (not gathers)
    if sx == 1:
        src = flat[base : base + nx]
        if swap:
            for x in range(nx):
                nat[x] = _bswap(src[x])
        else:
            for x in range(nx):
                nat[x] = src[x]
    else:
        srcs = flat[base : base + nx * sx : sx]
        if swap:
            for x in range(nx):
                nat[x] = _bswap(srcs[x])
        else:
            for x in range(nx):
                nat[x] = srcs[x]
    if kind == 0:
        if not direct:
            for x in range(nx):
                row[x] = np.float32(fview[x])
    elif kind == 1:
        if has_blank:
            for x in range(nx):
                s = sview[x]
                row[x] = np.float32(np.nan) if s == blank else np.float32(s)
        else:
            for x in range(nx):
                row[x] = np.float32(sview[x])
    elif has_blank:
        for x in range(nx):
            s = nat[x]
            row[x] = np.float32(np.nan) if s == blank else np.float32(s)
    else:
        for x in range(nx):
            row[x] = np.float32(nat[x])
    if do_scale or do_zero:
        for x in range(nx):
            row[x] = row[x] * scale + zero


@intrinsic
def _as_f32(typingctx, v):
    """The float32 whose bits are the uint32 ``v`` (a register bitcast)."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def row_source(mode, flat, base, sx, nx, dec, buf):  # pragma: no cover - overloaded
    raise NotImplementedError


@overload(row_source, inline="always")
def _ov_row_source(mode, flat, base, sx, nx, dec, buf):
    """What :func:`value` reads for row ``base``: the raw slice (fused modes) or the decoded row."""
    if mode.dtype in (types.float32, types.float64):
        return lambda mode, flat, base, sx, nx, dec, buf: flat[base : base + nx]

    def decoded(mode, flat, base, sx, nx, dec, buf):
        load_row(flat, base, sx, nx, dec, buf)
        return buf[3]

    return decoded


def value(mode, src, x):  # pragma: no cover - overloaded
    raise NotImplementedError


@overload(value, inline="always")
def _ov_value(mode, src, x):
    """Voxel ``x`` of a :func:`row_source` row as float32 (swapped and bitcast in registers)."""
    if mode.dtype == types.float32:
        return lambda mode, src, x: _as_f32(_bswap(src[x]))
    if mode.dtype == types.float64:
        return lambda mode, src, x: _as_f32(src[x])
    return lambda mode, src, x: src[x]


#: Largest finite float32, as float64: a voxel is finite iff ``-FMAX <= value <= FMAX``.
FMAX = float(np.finfo(np.float32).max)


def float32_bounds(lo: float, hi: float) -> tuple[np.float32, np.float32]:
    """float32 ``(lo32, hi32)`` with ``lo <= d <= hi  <=>  lo32 <= d <= hi32`` for every float32 ``d``:
    ``lo`` rounded up and ``hi`` rounded down to float32, so comparisons need no float64 conversion.
    (Assumes ``-FMAX <= lo``, ``hi <= FMAX``; NaN still fails both.)"""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    if float(lo32) < lo:
        lo32 = np.nextafter(lo32, np.float32(np.inf))
    if float(hi32) > hi:
        hi32 = np.nextafter(hi32, np.float32(-np.inf))
    return lo32, hi32


@njit(cache=True)
def kept(d, lo, hi, xlo, xhi):
    """``lo <= d <= hi and not (xlo < d < xhi)``: the voxel selection of every convention.

    Finite-only is ``lo = -FMAX, hi = FMAX``; a threshold or include range narrows ``[lo, hi]``;
    an exclude range sets ``(xlo, xhi)`` (open: its ends are kept); ``xlo = xhi = 0`` excludes
    nothing. NaN fails every comparison.
    """
    return (d >= lo) & (d <= hi) & ~((d > xlo) & (d < xhi))  # bitwise: no branches, vectorises


@njit(cache=True, inline="always")
def in_range(d, lo, hi):
    """``lo <= d <= hi`` without branches (NaN fails): :func:`kept` without an exclude range."""
    return (d >= lo) & (d <= hi)

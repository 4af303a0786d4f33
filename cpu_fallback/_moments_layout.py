"""Memory layout of the CPU moment kernel: chunk sizes, aligned scratch, plan and work buffers.

Part of :mod:`cpu_fallback.moments` (its module notes describe the layout); split out to keep
modules small.

CPU-only by design: a private helper module of the NumPy tree (no twin in ``gpu_kernels``, which
runs this step inside its own kernel); nothing outside ``cpu_fallback`` imports it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from kernel_common.moment_plans import AxisPlan

#: Channels per chunk.
_CHUNK = 32

#: Bytes of one chunk in the data type (channels x sub-block pixels): the chunk and its
#: temporaries stay in L2 or close; larger chunks mean fewer NumPy/BLAS calls.
_CHUNK_BYTES = 1 << 19

#: Pixels finished together (a block of whole sub-blocks), and the bytes of its chunk sums.
_BLOCK_PIXELS = 1 << 14
_PART_BYTES = 1 << 22

#: Scratch rows are padded to a multiple of this many pixels; scratch buffers are page-aligned.
_ROW_ALIGN = 64
_BUF_ALIGN = 4096

#: Order 0 without orders 1-5 is summed in float32: pixels with ``sum_k |C_k| > _COND * |M0|``
#: (``C_k`` the chunk sums, a lower bound of ``sum |I| dv``) are recomputed in float64.
_COND = 150.0



def _aligned(shape: tuple[int, ...], dtype: np.dtype | type, fill: float | None = 0.0) -> NDArray:
    """An array (filled with ``fill`` unless it is None) whose data start on a
    :data:`_BUF_ALIGN` boundary."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) * dt.itemsize
    raw = np.empty(n + _BUF_ALIGN, dtype=np.uint8)
    off = -raw.ctypes.data % _BUF_ALIGN
    a = raw[off : off + n].view(dt).reshape(shape)
    if fill is not None:
        a.fill(fill)
    return a


class _Plan:
    """What to compute and how the cube is cut: chunks, weight rows, block shape, thresholds."""

    def __init__(self, p: AxisPlan, nz: int, nx: int, dtype: np.dtype) -> None:
        o = set(p.orders)
        self.p, self.nx = p, nx
        self.dt = np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)
        self.nrow = 3 if 2 in o else 2 if o & {1, 3, 4, 5} else 1 if 0 in o else 0  # sum I u^j dv, j < nrow
        self.cen = max((k for k in o if 3 <= k <= 5), default=0)  # highest central power needed
        self.sq = 6 in o
        self.thr = p.threshold is not None
        zero_w = bool(np.any(p.w == 0))
        # running extrema: wanted, or telling blank spectra (no threshold), or -inf where BLAS
        # may skip a zero weight
        self.mx = 8 in o or not self.thr
        self.mn = 10 in o or (zero_w and not self.thr)
        self.blank_only = not self.thr and 8 not in o and not zero_w  # the maximum only tells blanks
        self.sums = bool(self.nrow) or self.sq or (self.thr and self.mn)  # the cleaned chunk is needed
        # with a threshold > 0, every kept voxel is > 0: a spectrum has none iff sum I dv == 0
        # (all dv > 0); otherwise, without extrema, the kept weight (or count) tells
        self.by_s0 = self.thr and self.nrow > 0 and float(p.threshold) > 0 and not zero_w
        self.kw = self.sq or (self.thr and not (self.mx or self.mn or self.by_s0))
        self.count = zero_w and not self.sq  # kept count instead of weight (telling blank spectra)
        # orders 1-5 (ratios of sums that can cancel, as the GPU reference does) take float64
        # sums; order 0 alone takes sums in the data type (float32), with a cancellation check
        self.sdt = np.dtype(np.float64) if self.nrow > 1 else self.dt
        self.proxy = self.nrow == 1 and self.sdt != np.float64 and not (self.thr and float(p.threshold) >= 0)
        c = min(_CHUNK, nz)
        self.c = c
        self.chunks = [(z0, min(nz, z0 + c)) for z0 in range(0, nz, c)]
        rows = np.array([p.w, p.w * p.u, p.w * p.u * p.u][: self.nrow], dtype=self.sdt).reshape(self.nrow, nz)
        self.rows = [rows[:, z0:z1] for z0, z1 in self.chunks]  # weight rows per chunk
        # rows of the block sums: sum I u^j dv (j < nrow), sum_k |C_k|, kept weight, sum I^2 dv
        names = [f"s{j}" for j in range(self.nrow)] + ["abs"] * self.proxy + ["kw"] * self.kw + ["sq"] * self.sq
        self.at = {name: i for i, name in enumerate(names)}
        self.w = p.w.astype(self.dt)
        self.w_s = p.w.astype(self.sdt)
        self.nxp = -(-nx // _ROW_ALIGN) * _ROW_ALIGN
        self.sub_rows = max(1, _CHUNK_BYTES // (c * self.dt.itemsize * self.nxp))  # rows per sub-block
        block = min(_BLOCK_PIXELS, _PART_BYTES // (max(len(self.at), 1) * len(self.chunks) * self.sdt.itemsize))
        self.block_rows = self.sub_rows * max(1, block // (self.sub_rows * self.nxp))
        self.npix = self.block_rows * self.nxp
        if self.thr:  # smallest value of the working type >= threshold, and the one below it
            t = np.array(p.threshold, dtype=self.dt)
            self.t = t if t >= p.threshold else np.nextafter(t, np.array(np.inf, self.dt))
            self.t_below = np.nextafter(self.t, np.array(-np.inf, self.dt))


class _ChunkViews(NamedTuple):
    """Scratch views of one chunk for a sub-block of ``r`` rows (built once per shape)."""

    copy: NDArray  # (cz, r, nx) view of the chunk, the copy's target
    b: NDArray  # (cz, m) the chunk, data type
    b64: NDArray  # (cz, m) its float64 copy
    t: NDArray  # (cz, m) temporary / keep mask (threshold)
    k: NDArray  # (cz, m) keep mask (order 6) / 0/0 temporary
    zero: NDArray  # (cz, m) zeros, or t- (threshold)
    hi: NDArray | None  # (cz, m) t (threshold)


class _Work:
    """Scratch buffers (reused across blocks)."""

    def __init__(self, q: _Plan) -> None:
        c, n, dt = q.c, q.npix, q.dt
        m = q.sub_rows * q.nxp if q.sums else 0  # pixels of a sub-block (no chunk copies for 8, 10)
        self.b = _aligned((c, m), dt)  # the cleaned chunk; row padding stays 0
        self.b64 = _aligned((c, m), np.float64, None) if q.sdt != dt or q.cen else self.b
        self.t = _aligned((c, m), dt, None)
        self.k = _aligned((c, m), dt, None)
        self.zero = _aligned((c, m), dt, q.t_below if q.thr else 0.0)
        self.hi = _aligned((c, m), dt, q.t) if q.thr else None
        self.red = _aligned((n,), dt, None)  # per-chunk reduction
        self.mx = _aligned((n,), dt, None) if q.mx else None
        self.mn = _aligned((n,), dt, None) if q.mn else None
        self.part = _aligned((len(q.at), len(q.chunks), n), q.sdt, None)  # chunk sums
        self.d = _aligned((c, m), np.float64, None) if q.cen else None  # u - M1 (orders 3-5)
        self.row64 = _aligned((m,), np.float64, None)
        self.ones = np.ones(c, dtype=dt)
        self.views: dict[int, list[_ChunkViews]] = {}

    def chunk_views(self, q: _Plan, r: int) -> list[_ChunkViews]:
        """Per-chunk scratch views for sub-blocks of ``r`` rows (cached)."""
        if r not in self.views:
            m = r * q.nxp
            self.views[r] = [
                _ChunkViews(
                    _views(q, self.b, z1 - z0, r),
                    self.b[: z1 - z0, :m],
                    self.b64[: z1 - z0, :m],
                    self.t[: z1 - z0, :m],
                    self.k[: z1 - z0, :m],
                    self.zero[: z1 - z0, :m],
                    self.hi[: z1 - z0, :m] if self.hi is not None else None,
                )
                for z0, z1 in q.chunks
            ]
        return self.views[r]


def _views(q: _Plan, a: NDArray, lead: int, r: int) -> NDArray:
    """The ``(lead, r, nx)`` view of the first ``r`` padded rows of a ``(lead, pixels)`` buffer."""
    return a[:lead, : r * q.nxp].reshape(lead, r, q.nxp)[:, :, : q.nx]


def _reduce_into(op: np.ufunc, src: NDArray, acc: NDArray, red: NDArray, first: bool) -> None:
    """``acc = op(acc, op.reduce(src, axis=0))`` (``acc = op.reduce(src)`` for the first chunk)."""
    if first:
        op.reduce(src, axis=0, out=acc)
    else:
        op.reduce(src, axis=0, out=red)
        op(acc, red, out=acc)

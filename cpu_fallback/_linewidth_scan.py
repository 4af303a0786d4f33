"""Whole-spectrum pass of the CPU line-width kernel: EW, robust noise, fit start and windows.

Part of :mod:`cpu_fallback.linewidth` (module notes there: steps 1-3 of the fit, the robust
noise and the vectorisation); split out to keep modules small.

CPU-only by design: a private helper module of the NumPy tree (no twin in ``gpu_kernels``, which
runs this step inside its own kernel); nothing outside ``cpu_fallback`` imports it.
"""

from __future__ import annotations

import numpy as np

from kernel_common.constants import FWHM_PER_SIGMA, MAD_TO_SIGMA
from kernel_common.linefit import WIN_SIGMA, WIN_STEP

#: Channels searched on each side of the peak for the half-power run before a full scan.
_RUN_REACH = 16


class _Scratch:
    """Reusable work arrays: a fresh NumPy temporary over ~128 KiB costs a page fault per page."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        size, dt = int(np.prod(shape)), np.dtype(dtype)
        a = self._arrays.get(name)
        if a is None or a.dtype != dt or a.size < size:
            a = self._arrays[name] = np.empty(max(size, 1), dtype=dt)
        return a[:size].reshape(shape)


# -- whole-spectrum pass -------------------------------------------------------------------------


def _scan(flat, p0, p1, axis, thr, snr_cut, fit, ew_out, buf):
    """EW of pixels ``p0:p1`` into ``ew_out``; with ``fit``, the fit start and window data.

    Channel-major on a ``(channel, pixel)`` copy of the block in ascending-axis order (and,
    with an SNR cut, a ``(pixel, channel)`` copy for the robust noise and the peak channel).
    Returns None or a dict: pixel indices, window ``lo, hi``, ``1 / peak``, half-power run
    ``lft, rgt``, ``sigma0`` and ``{window length: (positions, u, samples, used)}``.
    """
    nz, npx = axis.n, p1 - p0
    width = npx + (-npx) % (16 // flat.itemsize)
    shape = (nz, width)
    blk = buf.get("blk", shape, flat.dtype)
    blk[:, :npx] = axis.rows(flat, p0, p1)
    blk[:, npx:] = np.nan
    t = _transposed(blk, buf) if snr_cut > 0 else None  # all finite samples, NaN kept
    use = np.isfinite(blk, out=buf.get("use", shape, bool))
    nfin = use.sum(axis=0, dtype=np.int32) if t is not None else None
    if thr is not None:
        use &= np.greater_equal(blk, np.float64(thr), out=buf.get("mask", shape, bool))
    np.copyto(blk, 0, where=np.logical_not(use, out=buf.get("mask", shape, bool)))  # used samples, 0 elsewhere
    peak = blk.max(axis=0)  # the used peak wherever it is > 0
    if axis.uniform:  # column sums in channel order
        m0 = axis.dv[0] * blk.sum(axis=0, dtype=np.float64)
    else:
        m0 = np.multiply(blk, axis.dv[:, None], out=buf.get("y64", shape, np.float64)).sum(axis=0)
    ok = (m0 > 0) & (peak > 0)
    ok[npx:] = False
    cols = np.flatnonzero(ok)
    if cols.size == 0:
        return None
    if fit:  # first peak channel
        if t is not None:  # from the pixel-major copy (before it is sorted)
            hit = np.equal(t, peak[:, None], out=buf.get("hit", t.shape, bool))
            kp = np.argmax(hit, axis=1)[cols]
        else:
            it = np.int16 if nz < (1 << 15) else np.int32
            hit = np.equal(blk, peak, out=buf.get("mask", shape, bool))
            rank = np.multiply(hit, np.arange(nz, 0, -1, dtype=it)[:, None], out=buf.get("rank", shape, it))
            kp = nz - rank.max(axis=0)[cols].astype(np.intp)
    if t is not None:
        noise = MAD_TO_SIGMA * _mad(t, cols, nfin[cols])
        keep = peak[cols] >= snr_cut * noise
        cols = cols[keep]
        kp = kp[keep] if fit else None
    pk = peak[cols].astype(np.float64)
    ew_out[p0 + cols] = m0[cols] / pk
    if not fit or cols.size == 0:
        return None
    inv = 1.0 / pk
    half = 0.5 * peak[cols]  # exact
    bounds, reach = _half_run(blk, use, cols, kp, half, axis, inv, _RUN_REACH), _RUN_REACH
    while True:
        far = np.flatnonzero(np.isnan(bounds[2]) | np.isnan(bounds[3]))
        if far.size == 0:
            break
        reach = nz + 1 if 4 * reach > nz else 4 * reach
        sub = _half_run(blk, use, cols[far], kp[far], half[far], axis, inv[far], reach)
        for b, sb in zip(bounds, sub, strict=True):
            b[far] = sb
    lft, rgt, xl, xr = bounds
    sig0 = (xr - xl) / FWHM_PER_SIGMA
    lo, hi = _window(axis.u, 0.5 * (xl + xr), WIN_SIGMA * sig0, lft + 1, rgt)
    raws = _gather((blk.reshape(-1), use.reshape(-1)), width, cols, lo, hi, None, axis.u, buf)
    return {"pix": p0 + cols, "lo": lo, "hi": hi, "inv": inv, "lft": lft, "rgt": rgt, "sig0": sig0, "raws": raws}


def _half_run(y0, use, cols, kp, half, axis, inv, reach):
    """Half-power run and crossings around the peak channels ``kp`` of the columns ``cols``.

    Walking out from the peak over the *used* samples (unused ones are skipped), the run ends
    at the first sample at or below half power whose next used sample outward is too (the
    band edge counts as such); ``lft`` / ``rgt`` is that sample (-1 / ``nz`` at the band
    edge), and the crossing ``x_L`` / ``x_R`` is interpolated linearly between it and the
    last sample above half power (the band edge ``u -/+ du/2`` at the band edge). Searched
    within ``reach`` channels: the crossing is NaN where the run goes on further.
    """
    nz, width = y0.shape
    u, du = axis.u, axis.du
    kk = kp.astype(np.int32) + np.arange(-reach, reach + 1, dtype=np.int32)[:, None]
    out = (kk < 0) | (kk >= nz)
    idx = np.clip(kk, 0, nz - 1) * width + cols.astype(np.int32)
    used = np.take(use.reshape(-1), idx) | out
    vals = np.take(y0.reshape(-1), idx)
    vals[out] = 0
    below = ~(vals > half) | out
    res = []
    for rows, edge_x, edge_k in (
        (slice(reach - 1, None, -1), u[0] - 0.5 * du[0], -1),
        (slice(reach + 1, None), u[-1] + 0.5 * du[-1], nz),
    ):
        us, bs, ks, vs = used[rows], below[rows], kk[rows], vals[rows]  # row 0: next to the peak
        # every sample used: the run ends at the first two samples in a row at or below half power
        pair = bs[:-1] & bs[1:]
        r = np.argmax(pair, axis=0)[None]
        found = np.take_along_axis(pair, r, 0)[0]
        end, e_y = np.take_along_axis(ks, r, 0)[0].astype(np.intp), np.take_along_axis(vs, r, 0)[0].astype(np.float64)
        rp = np.maximum(r - 1, 0)
        e_a = np.where(r[0] > 0, np.take_along_axis(ks, rp, 0)[0], kp)
        e_ay = np.where(r[0] > 0, np.take_along_axis(vs, rp, 0)[0], 2 * half).astype(np.float64)
        part = np.flatnonzero(~us.all(axis=0))  # some unused: walk out row by row, skipping them
        if part.size:
            f, e, a, ay, ey = _walk(us[:, part], bs[:, part], ks[:, part], vs[:, part], kp[part], 2 * half[part])
            found[part], end[part], e_a[part], e_ay[part], e_y[part] = f, e, a, ay, ey
        edge = (end < 0) | (end >= nz)
        e, ea = np.clip(end, 0, nz - 1), np.clip(e_a, 0, nz - 1)
        ya, ye = e_ay * inv, e_y * inv
        with np.errstate(invalid="ignore", divide="ignore"):  # the band-edge case is not used
            x = u[e] + (u[ea] - u[e]) * ((0.5 - ye) / (ya - ye))
        res.append((np.where(edge, edge_k, end), np.where(found, np.where(edge, edge_x, x), np.nan)))
    (lft, xl), (rgt, xr) = res
    return [lft, rgt, xl, xr]


def _walk(us, bs, ks, vs, kp, peak):
    """Row-by-row form of the run end of :func:`_half_run` (rows outward from the peak)."""
    n = kp.size
    found, pending = np.zeros(n, bool), np.zeros(n, bool)
    a_k, a_y, c_k, c_y = kp.copy(), peak.astype(np.float64), kp.copy(), np.zeros(n)
    end, e_a, e_ay, e_y = np.zeros(n, np.intp), kp.copy(), np.zeros(n), np.zeros(n)
    for r in range(us.shape[0]):
        if r % 4 == 3 and found.all():
            break
        live = ~found & us[r]
        conf = live & bs[r] & pending  # a second sample at or below half: the run ended
        if conf.any():
            found |= conf
            end, e_a = np.where(conf, c_k, end), np.where(conf, a_k, e_a)
            e_ay, e_y = np.where(conf, a_y, e_ay), np.where(conf, c_y, e_y)
        first = live & bs[r] & ~pending
        c_k, c_y = np.where(first, ks[r], c_k), np.where(first, vs[r], c_y)
        pending |= first
        up = live & ~bs[r]
        pending &= ~up
        a_k, a_y = np.where(up, ks[r], a_k), np.where(up, vs[r], a_y)
    return found, end, e_a, e_ay, e_y


def _window(u, centre, halfw, run_lo, run_hi):
    """Fit window ``[lo, hi)`` of the sorted channels (module notes, step 3)."""
    nz = u.size
    lo = np.minimum(np.searchsorted(u, centre - halfw, side="left"), run_lo)
    hi = np.maximum(np.searchsorted(u, centre + halfw, side="right"), run_hi)
    hi = np.maximum(hi, lo)
    w = hi - lo
    wb = np.minimum(nz, np.maximum(WIN_STEP, -(-w // WIN_STEP) * WIN_STEP))
    lo = np.clip(lo - (wb - w) // 2, 0, nz - wb)
    return lo, lo + wb


def _gather(srcs, stride, cols, lo, hi, perm, u, buf):
    """``{length: (positions, u, *samples)}``, each ``(length, n)``, of windows ``[lo, hi)``.

    Samples ``src[row(k) * stride + col]`` of each source, and the axis ``u[k]``; ``row(k)`` is
    the sorted channel ``k`` itself, or ``perm[k]`` (original order) if given.
    """
    out = {}
    w = hi - lo
    for length in np.unique(w):
        pos = np.flatnonzero(w == length)
        shape = (int(length), pos.size)
        k = np.add(
            lo[pos].astype(np.int32), np.arange(length, dtype=np.int32)[:, None], out=buf.get("gk", shape, np.int32)
        )
        idx = buf.get("gidx", shape, np.intp)
        if perm is None:
            np.multiply(k, stride, out=idx)
        else:
            np.take(perm, k, out=idx)
            idx *= stride
        idx += cols[pos]
        out[int(length)] = (pos, np.take(u, k), *(np.take(src, idx) for src in srcs))
    return out


# -- robust noise --------------------------------------------------------------------------------


def _transposed(blk: np.ndarray, buf: _Scratch) -> np.ndarray:
    """``blk.T`` as a C-contiguous ``(pixel, channel)`` array, copied 16 bytes at a time."""
    nz, width = blk.shape
    k = 16 // blk.itemsize
    tc = buf.get("tc", (width // k, nz), np.complex128)
    np.copyto(tc, blk.view(np.complex128).T)
    t = buf.get("t", (width // k, k, nz), blk.dtype)
    np.copyto(t, tc.view(blk.dtype).reshape(width // k, nz, k).transpose(0, 2, 1))
    return t.reshape(width, nz)


def _mad(t: np.ndarray, rows: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Unscaled MAD of the ``n`` finite values of the ``rows`` of ``t`` (sorted in place; NaN if none).

    The median is read off the sorted finite values ``s``, and the absolute deviations are
    the two ascending runs ``med - s[h-1-j]`` and ``s[h+j] - med`` (``h = n // 2``): a batched
    binary search finds the ``k``-th smallest of their merge. The same float64 values as
    sorting the deviations themselves.
    """
    t.sort(axis=1)  # NaN last
    nz = t.shape[1]
    flat = t.reshape(-1)
    base = rows * nz
    n = n.astype(np.intp)
    # +-inf are not finite samples: where there are any, sort them last like NaN
    inf = (flat[base] == -np.inf) | ((n < nz) & ~np.isnan(flat[base + np.minimum(n, nz - 1)]))
    if inf.any():
        r = rows[inf]
        sub = t[r]
        sub[np.isinf(sub)] = np.nan
        sub.sort(axis=1)
        t[r] = sub
    nn = np.maximum(n, 1)
    k, h = (nn - 1) // 2, nn // 2
    med = 0.5 * (flat[base + k].astype(np.float64) + flat[base + h])

    def dev_a(j):  # j-th smallest deviation below the median: med - s[h - 1 - j]
        return med - flat[base + np.clip(h - 1 - j, 0, nz - 1)]

    def dev_b(j):  # j-th smallest deviation above the median: s[h + j] - med
        return flat[base + np.clip(h + j, 0, nn - 1)] - med

    # i = how many of the k + 1 smallest deviations come from run A (length h; B: nn - h)
    lo, hi = np.maximum(0, k + 1 - (nn - h)), np.minimum(k + 1, h)
    for _ in range(int(nz).bit_length()):
        mid = (lo + hi) // 2
        go = (lo < hi) & (dev_a(mid) < dev_b(k - mid))
        hi = np.where((lo < hi) & ~go, mid, hi)
        lo = np.where(go, mid + 1, lo)
    i, j = lo, k + 1 - lo
    with np.errstate(invalid="ignore"):
        last_a = np.where(i > 0, dev_a(i - 1), -np.inf)
        last_b = np.where(j > 0, dev_b(j - 1), -np.inf)
        kth = np.maximum(last_a, last_b)  # the k-th smallest deviation
        # the next one in the merge (for even n): the smaller of the next of A and of B
        nxt = np.minimum(np.where(i < h, dev_a(i), np.inf), np.where(j < nn - h, dev_b(j), np.inf))
    mad = np.where(h > k, 0.5 * (kth + nxt), kth)
    return np.where(n > 0, mad, np.nan)

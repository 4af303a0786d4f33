"""Fit windows of the CPU line-width kernel: ``(window, pixel)`` arrays and the LM sums.

Part of :mod:`cpu_fallback.linewidth` (module notes there: steps 3-5 and the vectorisation);
split out to keep modules small.

CPU-only by design: a private helper module of the NumPy tree (no twin in ``gpu_kernels``, which
runs this step inside its own kernel); nothing outside ``cpu_fallback`` imports it.
"""

from __future__ import annotations

import numpy as np

from cpu_fallback._linewidth_scan import _gather, _window
from kernel_common.linefit import COVER_SIGMA, WIN_SIGMA

#: Samples per evaluation chunk.
_EVAL_ELEMENTS = 1 << 15
#: Axis coordinate given to unused samples of a window: their model is exactly 0 there.
_U_FAR = 1e6
#: Below this many pixels still fitting, the windows of all lengths are merged into one array.
_TAIL_PIXELS = 2048


class _Group:
    """Fit windows of one length: positions, ``y`` and ``u`` arrays (see :class:`_Fit`)."""

    __slots__ = ("gid", "pos", "y", "u")

    def __init__(self, gid, pos, y, u):
        self.gid, self.pos, self.y, self.u = gid, pos, y, u


class _Fit:
    """The fit windows of a batch of ``n`` pixels, as ``(window, pixel)`` arrays by length.

    A group holds unit-peak data ``y`` and the axis ``u`` (0 and ``_U_FAR`` where a sample is
    unused, so that it adds exactly 0 to every sum), one column per pixel, so every sum over
    a window runs in channel order however the pixels are grouped. ``owner`` is the group
    holding each pixel's current window, ``alive`` marks the pixels being fitted and ``live``
    counts them per group.
    """

    def __init__(self, flat, axis, thr, pix, lo, hi, inv, buf):
        n = pix.size
        self.flat, self.axis, self.thr, self.buf = flat, axis, thr, buf
        self.pix, self.lo, self.hi, self.inv = pix, lo, hi, inv
        self.count = np.zeros(n, dtype=np.int64)
        self.owner = np.zeros(n, dtype=np.int64)
        self.rounds = np.zeros(n, dtype=np.int64)
        self.alive = np.zeros(n, dtype=bool)
        self.live = np.zeros(0, dtype=np.int64)
        self.groups: list[_Group] = []
        self.p = np.zeros((3, n))
        self.res = np.zeros((11, n))

    def add(self, raws) -> list[_Group]:
        """New windows ``{length: (positions, u, samples[, used])}``, replacing any older ones.

        Without ``used``, a sample is used if finite (and ``>= threshold``); with it, the
        samples are 0 where unused.
        """
        new = []
        for _length, (pos, u, raw, *rest) in sorted(raws.items()):
            if rest:
                used = rest[0]
            else:
                used = np.isfinite(raw)
                if self.thr is not None:
                    used &= raw >= np.float64(self.thr)
            y = np.multiply(raw, self.inv[pos], dtype=np.float64)
            if not used.all():
                unused = ~used
                y[unused], u[unused] = 0.0, _U_FAR
            self.count[pos] = used.sum(axis=0)
            new.append(self._new_group(pos, y, u))
        return new

    def _new_group(self, pos, y, u) -> _Group:
        g = _Group(self.live.size, pos, y, u)
        self.owner[pos] = g.gid
        self.live = np.append(self.live, 0)
        self.groups.append(g)
        return g

    def revive(self, pos):
        self.alive[pos] = True
        self.live += np.bincount(self.owner[pos], minlength=self.live.size)

    def kill(self, pos):
        self.alive[pos] = False
        self.live -= np.bincount(self.owner[pos], minlength=self.live.size)

    def run_mean(self, lft, rgt):
        """Moment start ``mu0 = sum y u du / sum y du`` over each pixel's half-power run."""
        ax = self.axis
        out = np.empty(self.pix.size)
        ul = np.where(lft >= 0, ax.u[np.maximum(lft, 0)], -np.inf)
        ur = np.where(rgt < ax.n, ax.u[np.minimum(rgt, ax.n - 1)], np.inf)
        for g in self.groups:
            if ax.uniform and ax.strict:  # u du and du without a gather; the run is u_l < u < u_r
                run = (g.u > ul[g.pos]) & (g.u < ur[g.pos])
                udu, du = g.u * ax.du[0], ax.du[0]
            else:
                k = self.lo[g.pos] + np.arange(g.y.shape[0])[:, None]
                run = (k > lft[g.pos]) & (k < rgt[g.pos])
                udu, du = ax.udu[k], ax.du[k]
            out[g.pos] = _colsum(g.y * udu * run) / _colsum(g.y * du * run)
        return out

    def covered(self, pos, mu, sig):
        """Whether each window reaches ``mu +- 4.5 sigma`` (or the band edge) on both sides."""
        u, nz = self.axis.u, self.axis.n
        lo, hi = self.lo[pos], self.hi[pos]
        short_lo = (lo > 0) & (u[np.maximum(lo - 1, 0)] >= mu - COVER_SIGMA * sig)
        short_hi = (hi < nz) & (u[np.minimum(hi, nz - 1)] <= mu + COVER_SIGMA * sig)
        return ~(short_lo | short_hi)

    def rewindow(self, pos, mu, sig, keep=False) -> list[_Group]:
        """New windows ``|u - mu| <= 5 sigma`` for the pixels ``pos`` (with ``keep``: and the old ones)."""
        run_lo, run_hi = (self.lo[pos], self.hi[pos]) if keep else (self.axis.n, 0)
        lo, hi = _window(self.axis.u, mu, WIN_SIGMA * sig, run_lo, run_hi)
        self.lo[pos], self.hi[pos] = lo, hi
        self.rounds[pos] += 1
        raws = _gather(
            (self.flat.reshape(-1),), self.flat.shape[1], self.pix[pos], lo, hi, self.axis.perm, self.axis.u, self.buf
        )
        return self.add({length: (pos[i], *arrays) for length, (i, *arrays) in raws.items()})

    def sums(self, req, p, groups=None):
        """Sums (:func:`_sums`, 11 rows) at parameters ``p`` (3, m) for the pixels ``req``.

        Evaluates ``groups`` (default: all) for their pixels being fitted; drops the windows of
        the others once a tenth of a group is done with, and merges all groups into one once
        few pixels remain.
        """
        self.p[:, req] = p
        if groups is None:
            if len(self.groups) > 1 and self.live.sum() < _TAIL_PIXELS:
                self._merge()
            self.groups = [g for g in self.groups if self.live[g.gid] > 0]
            groups = self.groups
        for g in groups:
            nl = self.live[g.gid]
            if nl == 0:
                continue
            if 10 * nl < 9 * g.pos.size:  # dead columns cost a full evaluation, a copy far less
                mine = self.alive[g.pos] & (self.owner[g.pos] == g.gid)
                g.pos, g.y, g.u = g.pos[mine], g.y[:, mine], g.u[:, mine]
            step = max(2, _EVAL_ELEMENTS // g.y.shape[0])
            for j0, j1 in _spans(g.pos.size, step):
                q = g.pos[j0:j1]
                self.res[:, q] = _sums(g.y[:, j0:j1], g.u[:, j0:j1], *self.p[:, q], self.buf)
        return self.res[:, req]

    def _merge(self):
        """One group of the pixels being fitted, windows padded at the end to the longest."""
        parts = []
        for g in self.groups:
            if self.live[g.gid] > 0:
                mine = self.alive[g.pos] & (self.owner[g.pos] == g.gid)
                parts.append((g.pos[mine], g.y[:, mine], g.u[:, mine]))
        self.groups = []
        if not parts:
            return
        length = max(y.shape[0] for _p, y, _u in parts)
        n = sum(pos.size for pos, _y, _u in parts)
        pos, y, u = np.empty(n, dtype=np.intp), np.zeros((length, n)), np.full((length, n), _U_FAR)
        j = 0
        for pp, yy, uu in parts:
            w, c = yy.shape
            pos[j : j + c], y[:w, j : j + c], u[:w, j : j + c] = pp, yy, uu
            j += c
        self.live[:] = 0
        g = self._new_group(pos, y, u)
        self.live[g.gid] = n


def _spans(n: int, step: int):
    """``[j0, j1)`` column chunks of about ``step`` columns, none of a single column."""
    edges = list(range(0, n, step)) + [n]
    if len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return zip(edges[:-1], edges[1:], strict=True)


def _colsum(x: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in channel order, one column per pixel.

    NumPy sums the columns of a 2-D array row by row (in order) but a single column as a
    vector (pairwise), so a lone column is summed beside a copy of itself.
    """
    if x.shape[1] == 1:
        return np.repeat(x, 2, axis=1).sum(axis=0)[:1]
    return x.sum(axis=0)


def _sums(y, u, a, mu, sig, buf):
    """The sums a Levenberg-Marquardt step needs, one column per pixel: (11, n).

    With ``z = (u - mu) / sigma``, ``g = exp(-z^2 / 2)`` (exactly 0 on unused samples) and
    ``r = y - A g``: ``chi^2 = sum r^2``, ``T_k = sum g r z^k`` and ``S_k = sum g^2 z^k``
    (k = 0..4; the terms are ``gr, gr z, gr z^2, (gr z^2) z, ((gr z^2) z) z`` with ``gr = r g``,
    and ``q, q z, q z^2, (q z^2) z, (q z^2) z^2`` with ``q = g^2``), each summed over the
    window in channel order.
    """
    w, n = y.shape
    if n == 1:  # see _colsum
        return _sums(*(np.repeat(v, 2, axis=-1) for v in (y, u, a, mu, sig)), buf)[:, :1]
    z, z2, g, r, t = buf.get("sums", (5, w, n), np.float64)
    out = np.empty((11, n))
    np.subtract(u, mu, out=z)
    z *= 1.0 / sig
    np.multiply(z, z, out=z2)
    np.multiply(z2, -0.5, out=g)
    np.exp(g, out=g)
    np.multiply(g, a, out=r)
    np.subtract(y, r, out=r)
    np.multiply(r, r, out=t).sum(axis=0, out=out[0])
    r *= g
    r.sum(axis=0, out=out[1])
    np.multiply(r, z, out=t).sum(axis=0, out=out[2])
    np.multiply(r, z2, out=t).sum(axis=0, out=out[3])
    t *= z
    t.sum(axis=0, out=out[4])
    t *= z
    t.sum(axis=0, out=out[5])
    g *= g
    g.sum(axis=0, out=out[6])
    np.multiply(g, z, out=t).sum(axis=0, out=out[7])
    g *= z2
    g.sum(axis=0, out=out[8])
    np.multiply(g, z, out=t).sum(axis=0, out=out[9])
    np.multiply(g, z2, out=t).sum(axis=0, out=out[10])
    return out

"""Per-pixel line widths on the CPU: Gaussian FWHM by batched Levenberg-Marquardt, and EW.

Backs ``POST /v1/spectral/linewidth`` (client contract §6.2). The service crops the channel
range and passes the ``(spectral, y, x)`` cube with the channel centres ``coords`` and the
channel widths ``widths`` (same spectral unit, e.g. km/s; ``widths > 0``).

Per spatial pixel, over the *used* samples (finite, and ``>= threshold`` when one is given):

* ``M0 = sum I_i dv_i``, ``peak = max I_i``, ``EW = M0 / peak`` (a boxcar-equivalent width).
* Robust noise ``sigma_N = 1.4826 * MAD`` over all finite samples of the spectrum.
* The pixel is *blank* (both maps NaN) when it has no used sample, ``M0 <= 0``, ``peak <= 0``
  or ``peak < snr_cut * sigma_N`` (``snr_cut = 0`` disables the cut).
* ``FWHM = 2 sqrt(2 ln 2) sigma = 2.3548 sigma`` from the least-squares fit of
  ``f(v) = A exp(-(v - mu)^2 / (2 sigma^2))`` (no constant offset: the cube is expected to be
  continuum-subtracted, and an offset is degenerate with a wide line in a narrow window) over
  a *fit window* of channels around the line (below).

Fit (shared step for step with :mod:`gpu_kernels.linewidth`). The channels are taken in
ascending order of ``coords`` (a stable sort: a no-op for an increasing axis), the axis is
mapped to ``u = (v - c) / h`` (``c`` centre, ``h`` half-span of ``coords``; ``du = dv / h``)
and the data are divided by the peak (``y = I / peak``). Unused samples are skipped throughout.

1. *Half-power run*: walking out from the first peak channel ``k_p`` on each side, the run
   ends at the first sample at or below half power whose next used sample outward is also at
   or below half power (the band edge counts as such), so a single dip does not end it:
   ``l < k < r`` (``l = -1`` / ``r = n`` where the run reaches the band edge).
2. *Start* (moment estimates): ``A0 = 1``; ``mu0 = sum y u du / sum y du`` over the run;
   ``sigma0 = (x_R - x_L) / 2.3548`` with the half-power crossings ``x_L``, ``x_R``
   interpolated linearly between the run's end sample and the last sample above half power
   before it (``u[0] - du[0]/2`` / ``u[-1] + du[-1]/2`` where the run reaches the band edge).
3. *Window*: the channels with ``|u - (x_L + x_R)/2| <= 5 sigma0``, widened to take in the
   run, then to a multiple of 8 channels (at least 8, at most all) about its centre and shifted
   inside the band. Fewer than 4 used samples in the window -> FWHM NaN.
4. *Levenberg-Marquardt* on ``chi^2 = sum (y - f)^2`` over the window: each step solves
   ``(H + lambda diag(J^T J)) d = J^T r`` by an explicit 3x3 Cholesky factorisation, with ``H``
   the exact Hessian of ``chi^2 / 2`` (``J^T J`` less the residual curvature ``sum r d2f``:
   Newton steps, which converge in a few steps even where the residuals are large), or the
   Gauss-Newton ``J^T J`` where that matrix is not positive definite. Damping after Nielsen:
   ``lambda0 = 1e-3``; after a step that lowers ``chi^2``, ``lambda *= max(1/3, 1 - (2 rho -
   1)^3)`` (``rho``: actual over predicted decrease; at least ``1e-12``) and ``nu = 2``; after
   one that does not, ``lambda *= nu``, ``nu *= 2``. *Converged* when ``lambda < 1`` and the
   step would lower ``chi^2`` by at most ``1e-4 chi^2 / dof`` (``dof`` = used samples - 3:
   the step is ~1 % of the parameters' standard errors) or change every parameter by at
   most ``1e-9`` of its scale (``|A|, |sigma|, |sigma|``) -- the result is the point plus
   that step; when an accepted step lowered ``chi^2`` by at most ``max(1e-12 chi^2, 1e-4
   chi^2 / dof)``; or when ``lambda nu > 1e12`` after a rejected step (no descent left).
   *Failed* (FWHM NaN) after ``max_iter`` steps, or at an accepted step to ``A <= 0`` or
   ``|sigma|`` outside ``[sigma_min, span]`` (``sigma_min``: half the narrowest channel
   width; a narrower line is unresolved). An accepted step that takes ``mu`` out of the
   window widens the window to also cover ``|u - mu| <= 5 |sigma|`` and the fit goes on,
   with fresh damping, from the last point inside the old window.
5. *Window check*: a converged fit whose window stops short of ``mu +- 4.5 sigma`` on a side
   that is not the band edge is fitted again, from its parameters, in the window
   ``|u - mu| <= 5 sigma`` (step 3 without the run). Steps 4 and 5 give a pixel at most two
   new windows; after that a converged fit stands and a fit leaving its window fails.
6. ``A <= 0``, ``mu`` outside the axis or ``sigma`` outside ``[sigma_min, span]`` -> FWHM NaN.

The window keeps every sample within ``4.5 sigma`` of the line (the model is below ``e^-10``
of the peak beyond), so the result is the whole-spectrum least-squares fit to far better
than its statistical error (on NGC 5921 within 1.2e-4 of ``scipy.optimize.curve_fit``
over the whole spectrum), at the cost of a few dozen channels per pixel.

Vectorisation: batches of ``2**16`` pixels. The whole-spectrum statistics run channel-major
on blocks of 2048 pixels (the robust noise sorts a transposed copy of each spectrum once and
finds the MAD by a binary search over the two sorted runs of deviations). The windows are
gathered into ``(window, pixel)`` arrays, one per window length, and one LM state (arrays of
parameters, damping and sums) drives the whole batch: converged pixels leave, their windows
are dropped, and the last few are merged into one array. No loop over pixels. Every sum over
channels runs in channel order, one pixel per column, with unused samples adding exact zeros,
so each pixel's arithmetic is independent of the others (a y-slab chunk gives the whole-cube
result bit for bit) and is the GPU kernel's per-thread loop. The array work is NumPy calls,
which release the GIL, so row chunks overlap in threads (the per-step bookkeeping does not).
"""

from __future__ import annotations

import numpy as np

_Array = np.ndarray

#: FWHM / sigma of a Gaussian, 2 sqrt(2 ln 2).
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
#: Robust sigma / MAD for Gaussian noise (the contract's constant).
MAD_TO_SIGMA = 1.4826
_LAMBDA0, _LAMBDA_MIN, _LAMBDA_MAX, _FTOL, _XTOL = 1e-3, 1e-12, 1e12, 1e-12, 1e-9
#: Converged when a step would lower, or an accepted step lowered, chi^2 by at most this
#: fraction of chi^2 / dof (the noise variance): a step of ~1 % of the standard errors.
_STAT_TOL = 1e-4
#: Smallest sigma, in units of the narrowest channel width (a narrower line is unresolved).
_SIGMA_MIN = 0.5
_MIN_SAMPLES = 4
#: Window half-width in sigma when built, and the half-width a converged fit's window must cover.
_WIN_SIGMA, _COVER_SIGMA = 5.0, 4.5
#: Window lengths are multiples of this many channels (and at least this many).
_WIN_STEP = 8
#: Fits per pixel at most (the first and up to two with a wider or moved window).
_MAX_ROUNDS = 3
#: Channels searched on each side of the peak for the half-power run before a full scan.
_RUN_REACH = 16
#: Pixels per block of the whole-spectrum pass, per LM batch, and samples per evaluation chunk.
_SUB_PIXELS, _BATCH_PIXELS, _EVAL_ELEMENTS = 2048, 1 << 16, 1 << 15
#: Axis coordinate given to unused samples of a window: their model is exactly 0 there.
_U_FAR = 1e6
#: Below this many pixels still fitting, the windows of all lengths are merged into one array.
_TAIL_PIXELS = 2048


def equivalent_width(cube: _Array, widths: _Array, *, snr_cut: float = 0.0, threshold: float | None = None) -> _Array:
    """Equivalent-width map ``EW = sum(I dv) / max(I)`` of a ``(spectral, y, x)`` cube.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities (e.g. Jy/beam); non-finite values are blank.
    widths : numpy.ndarray
        ``(nz,)`` channel widths ``dv_i > 0`` in the spectral unit.
    snr_cut : float, optional
        Blank pixels with ``peak < snr_cut * 1.4826 * MAD``; 0 (default) disables the cut.
    threshold : float or None, optional
        If given, only samples ``>= threshold`` are used (the moment-map mask rule).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 EW in the spectral unit; NaN for blank pixels (see module notes).
    """
    return _run(cube, None, widths, snr_cut, threshold, 0)[1]


def gaussian_linewidth(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    snr_cut: float = 3.0,
    threshold: float | None = None,
    max_iter: int = 100,
) -> tuple[_Array, _Array]:
    """Gaussian FWHM and equivalent-width maps of a ``(spectral, y, x)`` cube.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities; non-finite values are blank. Any float dtype.
    coords : numpy.ndarray
        ``(nz,)`` channel centres ``v_i`` (e.g. km/s), monotonic or not.
    widths : numpy.ndarray
        ``(nz,)`` channel widths ``dv_i > 0`` in the same unit.
    snr_cut : float, optional
        Peak over robust noise below which a pixel is blank; 0 disables. Default 3.
    threshold : float or None, optional
        If given, only samples ``>= threshold`` enter EW and the fit.
    max_iter : int, optional
        Levenberg-Marquardt steps per fit before it counts as failed. Default 100.

    Returns
    -------
    fwhm : numpy.ndarray
        ``(ny, nx)`` float32, ``2.3548 * sigma`` in the unit of ``coords``; NaN where blank or
        where the fit failed, did not converge or is non-physical.
    ew : numpy.ndarray
        ``(ny, nx)`` float32, ``sum(I dv) / max(I)`` in the unit of ``widths``; NaN where blank.
    """
    return _run(cube, coords, widths, snr_cut, threshold, max_iter)


# -- driver --------------------------------------------------------------------------------------


class _Axis:
    """The spectral axis in ascending order (stable sort of ``coords``) and its scaled forms."""

    def __init__(self, coords: np.ndarray | None, widths: np.ndarray) -> None:
        nz = widths.size
        x = np.zeros(nz) if coords is None else coords
        self.n = nz
        self.perm = np.argsort(x, kind="stable")
        self.order = "same" if np.array_equal(self.perm, np.arange(nz)) else "other"
        if self.order == "other" and np.array_equal(self.perm, np.arange(nz)[::-1]):
            self.order = "reversed"
        centre, self.half = _axis_scale(x)
        self.u = (x[self.perm] - centre) / self.half
        self.du = widths[self.perm] / self.half
        self.udu = self.u * self.du
        self.dv = widths[self.perm]
        self.span = self.u[-1] - self.u[0]
        self.sig_min = _SIGMA_MIN * self.du.min()
        self.uniform = bool(np.all(widths == widths[0]))
        self.strict = bool(np.all(np.diff(self.u) > 0))

    def rows(self, flat: np.ndarray, p0: int, p1: int) -> np.ndarray:
        """Pixels ``p0:p1`` of the ``(channel, pixel)`` array ``flat`` in ascending-axis order."""
        if self.order == "same":
            return flat[:, p0:p1]
        return flat[::-1, p0:p1] if self.order == "reversed" else flat[self.perm, p0:p1]


def _axis_scale(x: np.ndarray) -> tuple[float, float]:
    """Centre and half-span of the spectral axis (half-span 1 for a single channel)."""
    lo, hi = float(x.min()), float(x.max())
    half = 0.5 * (hi - lo)
    return 0.5 * (hi + lo), (half if half > 0 else 1.0)


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


def _run(cube, coords, widths, snr_cut, threshold, max_iter):
    """Validate, then the FWHM (NaN where not fitted) and EW maps, batch by batch of pixels."""
    a = np.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    nz = a.shape[0]
    dv = np.asarray(widths, dtype=np.float64)
    if dv.shape != (nz,):
        raise ValueError(f"widths must have shape ({nz},), got {dv.shape}")
    x = None
    if coords is not None:
        x = np.asarray(coords, dtype=np.float64)
        if x.shape != (nz,):
            raise ValueError(f"coords must have shape ({nz},), got {x.shape}")
    shape = a.shape[1:]
    npix = int(np.prod(shape))
    fwhm = np.full(npix, np.nan, dtype=np.float32)
    ew = np.full(npix, np.nan, dtype=np.float32)
    if npix == 0 or nz == 0:
        return fwhm.reshape(shape), ew.reshape(shape)
    flat = np.ascontiguousarray(a.reshape(nz, npix), dtype=np.float32 if a.dtype == np.float32 else np.float64)
    axis, buf = _Axis(x, dv), _Scratch()
    thr = None if threshold is None else float(threshold)
    for b0 in range(0, npix, _BATCH_PIXELS):
        b1 = min(npix, b0 + _BATCH_PIXELS)
        subs = [_scan(flat, s0, min(b1, s0 + _SUB_PIXELS), axis, thr, float(snr_cut), x is not None, ew, buf)
                for s0 in range(b0, b1, _SUB_PIXELS)]  # fmt: skip
        subs = [s for s in subs if s is not None]
        if subs:
            _fit_batch(flat, subs, axis, thr, max_iter, fwhm, buf)
    return fwhm.reshape(shape), ew.reshape(shape)


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
    lo, hi = _window(axis.u, 0.5 * (xl + xr), _WIN_SIGMA * sig0, lft + 1, rgt)
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
    wb = np.minimum(nz, np.maximum(_WIN_STEP, -(-w // _WIN_STEP) * _WIN_STEP))
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


# -- fit -----------------------------------------------------------------------------------------


def _fit_batch(flat, subs, axis, thr, max_iter, fwhm_out, buf):
    """Fit the candidates of a batch (the ``_scan`` results of its blocks) into ``fwhm_out``."""
    cat = {key: np.concatenate([s[key] for s in subs]) for key in ("pix", "lo", "hi", "inv", "lft", "rgt", "sig0")}
    parts, off = {}, 0
    for s in subs:
        for length, (pos, *arrays) in s["raws"].items():
            parts.setdefault(length, []).append((pos + off, *arrays))
        off += s["pix"].size
    raws = {}
    for length, ps in parts.items():
        raws[length] = (
            np.concatenate([q[0] for q in ps]),
            *(np.concatenate([q[i] for q in ps], axis=1) for i in (1, 2, 3)),
        )
    fit = _Fit(flat, axis, thr, cat["pix"], cat["lo"], cat["hi"], cat["inv"], buf)
    fit.add(raws)
    mu0 = fit.run_mean(cat["lft"], cat["rgt"])
    p = _lm(fit, np.stack([np.ones(mu0.size), mu0, cat["sig0"]]), max_iter)
    a, mu, sig = p[0], p[1], np.abs(p[2])
    u = axis.u
    good = np.isfinite(a) & (a > 0) & (mu >= u[0]) & (mu <= u[-1]) & (sig >= axis.sig_min) & (sig <= axis.span)
    fwhm_out[fit.pix] = np.where(good, FWHM_PER_SIGMA * axis.half * sig, np.nan)


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
        short_lo = (lo > 0) & (u[np.maximum(lo - 1, 0)] >= mu - _COVER_SIGMA * sig)
        short_hi = (hi < nz) & (u[np.minimum(hi, nz - 1)] <= mu + _COVER_SIGMA * sig)
        return ~(short_lo | short_hi)

    def rewindow(self, pos, mu, sig, keep=False) -> list[_Group]:
        """New windows ``|u - mu| <= 5 sigma`` for the pixels ``pos`` (with ``keep``: and the old ones)."""
        run_lo, run_hi = (self.lo[pos], self.hi[pos]) if keep else (self.axis.n, 0)
        lo, hi = _window(self.axis.u, mu, _WIN_SIGMA * sig, run_lo, run_hi)
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


def _normal(s, p):
    """Hessian ``H`` of ``chi^2 / 2``, ``J^T J`` (entries 00 01 02 11 12 22) and ``J^T r``.

    From the sums ``s`` of :func:`_sums` at ``p = (A, mu, sigma)``, with ``c = A / sigma``,
    ``q = A / sigma^2``: ``J = [g, c g z, c g z^2]``, ``J^T J = [S0, c S1, c S2, c^2 S2,
    c^2 S3, c^2 S4]``, ``J^T r = [T0, c T1, c T2]``, and ``H = J^T J - sum r d2f`` with
    ``sum r d2f = [0, T1 / sigma, T2 / sigma, q (T2 - T0), q (T3 - 2 T1), q (T4 - 3 T2)]``.
    """
    t0, t1, t2, t3, t4, s0, s1, s2, s3, s4 = s[1:]
    a, sig = p[0], p[2]
    c = a / sig
    q = a / (sig * sig)
    jj = np.stack([s0, c * s1, c * s2, c * c * s2, c * c * s3, c * c * s4])
    h = np.stack([
        s0, jj[1] - t1 / sig, jj[2] - t2 / sig,
        jj[3] - q * (t2 - t0), jj[4] - q * (t3 - 2.0 * t1), jj[5] - q * (t4 - 3.0 * t2),
    ])  # fmt: skip
    return h, jj, np.stack([t0, c * t1, c * t2])


def _solve(h, e, b, lam):
    """Solve ``(H + lam diag(e)) d = b`` by 3x3 Cholesky; ``ok`` False where not positive definite.

    ``h``: the 6 entries 00 01 02 11 12 22 of a symmetric matrix; ``e``: 3 damping weights.
    """
    h00, h01, h02, h11, h12, h22 = h
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m00, m11, m22 = h00 + lam * e[0], h11 + lam * e[1], h22 + lam * e[2]
        l00 = np.sqrt(m00)
        l10, l20 = h01 / l00, h02 / l00
        d11 = m11 - l10 * l10
        l11 = np.sqrt(d11)
        l21 = (h12 - l20 * l10) / l11
        d22 = m22 - l20 * l20 - l21 * l21
        l22 = np.sqrt(d22)
        y0 = b[0] / l00
        y1 = (b[1] - l10 * y0) / l11
        y2 = (b[2] - l20 * y0 - l21 * y1) / l22
        x2 = y2 / l22
        x1 = (y1 - l21 * x2) / l11
        x0 = (y0 - l10 * x1 - l20 * x2) / l00
    ok = (m00 > 0) & (d11 > 0) & (d22 > 0) & np.isfinite(x0) & np.isfinite(x1) & np.isfinite(x2)
    return np.stack([x0, x1, x2]), ok


class _State:
    """LM state of the pixels being fitted: parallel arrays, one entry per pixel."""

    FIELDS = ("act", "p", "lam", "nu", "it", "dof", "s")

    def __init__(self, **kw):
        for f in self.FIELDS:
            setattr(self, f, kw[f])

    def take(self, k):
        return _State(**{f: getattr(self, f)[..., k] for f in self.FIELDS})

    def cat(self, other):
        return _State(**{f: np.concatenate([getattr(self, f), getattr(other, f)], axis=-1) for f in self.FIELDS})


def _begin(fit: _Fit, pos: np.ndarray, p: np.ndarray, groups=None) -> _State:
    """Fresh LM state for the pixels ``pos`` (their windows in ``groups``) from parameters ``p``."""
    fit.revive(pos)
    n = pos.size
    return _State(act=pos, p=p, lam=np.full(n, _LAMBDA0), nu=np.full(n, 2.0), it=np.zeros(n, np.int64),
                  dof=np.maximum(fit.count[pos] - 3, 1).astype(np.float64), s=fit.sums(pos, p, groups))  # fmt: skip


def _lm(fit: _Fit, p0: np.ndarray, max_iter: int) -> np.ndarray:
    """Batched LM of all pixels of ``fit`` from ``p0`` (3, n): (3, n) result, NaN where failed."""
    out = np.full(p0.shape, np.nan)
    ok0 = fit.count >= _MIN_SAMPLES
    st = _begin(fit, np.flatnonzero(ok0), p0[:, ok0])
    sig_min, sig_max = fit.axis.sig_min, fit.axis.span
    while st.act.size:
        chi2 = st.s[0]
        h, jj, b = _normal(st.s, st.p)
        e = jj[[0, 3, 5]]
        # Newton step on the exact Hessian; the Gauss-Newton one where that is not positive definite
        d, ok = _solve(h, e, b, st.lam)
        if not ok.all():
            k = np.flatnonzero(~ok)
            d[:, k], ok[k] = _solve(jj[:, k], e[:, k], b[:, k], st.lam[k])
        # predicted chi^2 decrease of the step: b.d + lam d.diag(J^T J).d
        pred = np.sum(b * d, axis=0) + st.lam * np.sum(e * d * d, axis=0)
        tol = _STAT_TOL * chi2 / st.dof
        p, sig = st.p, np.abs(st.p[2])
        tiny = (np.abs(d[0]) <= _XTOL * np.abs(p[0])) & (np.abs(d[1]) <= _XTOL * sig) & (np.abs(d[2]) <= _XTOL * sig)
        done = ok & (st.lam < 1.0) & ((pred <= tol) | tiny)  # a step that would change (almost) nothing
        restart = [_finish(fit, out, st.act[done], p[:, done] + d[:, done])] if done.any() else []
        restart_states = []
        if done.any():
            keep = ~done
            st, d, ok, pred, tol = st.take(keep), d[:, keep], ok[keep], pred[keep], tol[keep]
        if st.act.size:
            p, chi2 = st.p, st.s[0]
            pn = np.where(ok, p + d, p)
            ok &= pn[2] != 0
            sn = fit.sums(st.act, pn)
            acc = ok & (sn[0] < chi2)
            with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                t = 2.0 * ((chi2 - sn[0]) / pred) - 1.0  # 2 (gain ratio) - 1
                shrink = np.maximum(1.0 / 3.0, 1.0 - t * t * t)
            done = (acc & (chi2 - sn[0] <= np.maximum(_FTOL * chi2, tol))) | (~acc & (st.lam * st.nu > _LAMBDA_MAX))
            st.lam = np.where(acc, np.maximum(st.lam * shrink, _LAMBDA_MIN), st.lam * st.nu)
            st.nu = np.where(acc, 2.0, 2.0 * st.nu)
            prev = p
            st.p, st.s = np.where(acc, pn, p), np.where(acc, sn, st.s)
            st.it = st.it + 1
            p, sig = st.p, np.abs(st.p[2])
            # a step out of the physical region ends the fit as failed: no line, or unresolved;
            # one that takes the centre out of the window starts it again in a new window
            bad = acc & ((p[0] <= 0) | (sig < sig_min) | (sig > sig_max))
            away = acc & ~bad & ((p[1] < fit.axis.u[fit.lo[st.act]]) | (p[1] > fit.axis.u[fit.hi[st.act] - 1]))
            done &= ~(bad | away)
            stop = done | bad | away | (st.it >= max_iter)
            if done.any():
                restart.append(_finish(fit, out, st.act[done], p[:, done]))
            if away.any():  # widen the window to take in the new centre; go on from the last point in it
                pos, pa = st.act[away], p[:, away]
                again = (fit.rounds[pos] < _MAX_ROUNDS - 1) & (pa[1] >= fit.axis.u[0]) & (pa[1] <= fit.axis.u[-1])
                fit.kill(pos)
                pos, pa, pp = pos[again], pa[:, again], prev[:, away][:, again]
                if pos.size:
                    groups = fit.rewindow(pos, pa[1], np.abs(pa[2]), keep=True)
                    ok1 = fit.count[pos] >= _MIN_SAMPLES
                    if ok1.any():
                        new = _begin(fit, pos[ok1], np.stack([pp[0], pp[1], np.abs(pp[2])])[:, ok1], groups)
                        restart_states.append(new)
            if stop.any():
                fit.kill(st.act[stop & ~done & ~away])
                st = st.take(~stop)
        for pos, p in restart:
            if pos.size:
                groups = fit.rewindow(pos, p[1], np.abs(p[2]))
                ok1 = fit.count[pos] >= _MIN_SAMPLES
                if ok1.any():
                    st = st.cat(_begin(fit, pos[ok1], np.stack([p[0], p[1], np.abs(p[2])])[:, ok1], groups))
        for new in restart_states:
            st = st.cat(new)
    return out


def _finish(fit: _Fit, out: np.ndarray, pos: np.ndarray, p: np.ndarray):
    """Record converged fits; return ``(positions, parameters)`` of those to fit again.

    A physical fit whose window stops short of ``mu +- 4.5 sigma`` away from the band edge is
    fitted again in a new window, at most ``_MAX_ROUNDS - 1`` times.
    """
    fit.kill(pos)
    ax = fit.axis
    sig = np.abs(p[2])
    again = (fit.rounds[pos] < _MAX_ROUNDS - 1) & (p[0] > 0) & (sig >= ax.sig_min) & (sig <= ax.span)
    again &= (p[1] >= ax.u[0]) & (p[1] <= ax.u[-1])
    if again.any():
        k = np.flatnonzero(again)
        again[k] = ~fit.covered(pos[k], p[1, k], sig[k])
    out[:, pos[~again]] = p[:, ~again]
    return pos[again], p[:, again]

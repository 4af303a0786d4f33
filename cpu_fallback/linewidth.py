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

Fit (shared step for step with :mod:`gpu_kernels.linewidth`). The channels are put in
ascending order of ``coords`` (a stable sort; a no-op for an increasing axis), the axis is
mapped to ``u = (v - c) / h`` (``c`` centre, ``h`` half-span of ``coords``) and the data are
divided by the pixel's peak (``y = I / peak``, unused samples 0).

1. *Half-power run*: the channels next to the first peak channel ``k_p`` with ``y > 1/2``,
   ``l < k < r`` (``l``, ``r`` the nearest channels with ``y <= 1/2``, or unused, on each
   side; ``-1`` / ``n`` at the band ends).
2. *Start* (moment estimates): ``A0 = 1``; ``mu0`` = the intensity-weighted mean ``u`` over
   the run, ``sum y u du / sum y du``; ``sigma0 = (x_R - x_L) / 2.3548`` with ``x_L``,
   ``x_R`` the half-power crossings, interpolated linearly between channels ``l, l + 1`` and
   ``r - 1, r`` (the band edge ``u -/+ du/2`` where the run reaches it).
3. *Window*: the channels with ``|u - (x_L + x_R)/2| <= 4.5 sigma0``, widened to cover the
   run, then to a multiple of 8 channels (at least 8, at most all), centred and shifted
   inside the band. Fewer than 4 used samples in it -> FWHM NaN.
4. *Levenberg-Marquardt* over the window's used samples with Marquardt damping
   ``(J^T J + lambda diag(J^T J)) delta = J^T r`` (``lambda0 = 1e-3``, /10 after an accepted
   step, x10 after a rejected one), 3x3 systems solved by an explicit Cholesky
   factorisation. Converged when an accepted step changes ``chi^2`` by at most ``1e-12 chi^2``,
   when the next Gauss-Newton step (``lambda < 1``) would change every parameter by at most
   ``1e-7`` of its scale (``|A|``, ``|sigma|``, ``|sigma|``), or when ``lambda > 1e12`` (no
   descent left). Not converged within ``max_iter`` steps -> FWHM NaN.
5. *Window check*: a converged fit whose window stops short of ``mu +- 4 sigma`` on a side
   that is not the band edge is fitted again (steps 3-4, from the fitted parameters, window
   ``|u - mu| <= 4.5 sigma``), at most twice; the last fit stands.
6. ``A <= 0``, ``mu`` outside the axis or ``sigma`` not in ``(0, span]`` -> FWHM NaN.

The window drops only samples where the model is below ``e^-8`` of the peak, so the result
is the full-spectrum least-squares fit to far better than its statistical error, at the
cost of a few dozen channels per pixel instead of the whole spectrum.

Vectorisation: the cube is processed in blocks of pixels. The whole-spectrum statistics run
channel-major on the block (the robust noise sorts a transposed copy); the windows of a
block's candidates are gathered into ``(window, pixel)`` arrays, one per window length, and
one LM state (arrays of parameters, damping, ``chi^2``, ``J^T J``, ``J^T r``) drives all of
them; converged pixels leave the active set. No loop over pixels. Every sum over channels
runs in channel order, one pixel per column, so each pixel's arithmetic is independent of
the others (a y-slab chunk gives exactly the whole-cube result) and matches the GPU
kernel's per-thread loop. All heavy steps are NumPy calls that release the GIL, so row
chunks run in parallel threads.
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
#: fraction of chi^2 / dof (the noise variance): parameters within ~1e-3 of their error.
_STAT_TOL = 1e-6
#: Smallest sigma, in units of the narrowest channel width (a narrower line is unresolved).
_SIGMA_MIN = 0.5
_MIN_SAMPLES = 4
#: Window half-width in sigma when built, and the half-width a fit's window must cover.
_WIN_SIGMA, _COVER_SIGMA = 4.5, 4.0
#: Window lengths are multiples of this many channels (and at least this many).
_WIN_STEP = 8
#: Fits per pixel at most (the first and up to two with a wider or moved window).
_MAX_ROUNDS = 3
#: Channels searched on each side of the peak for the half-power run before a full scan.
_RUN_REACH = 16
#: Pixels per block of the whole-spectrum pass, per LM batch, and samples per evaluation chunk.
_SUB_PIXELS, _BATCH_PIXELS, _EVAL_ELEMENTS = 2048, 1 << 16, 1 << 15
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
        self.identity = bool(np.array_equal(self.perm, np.arange(nz)))
        centre, self.half = _axis_scale(x)
        self.u = (x[self.perm] - centre) / self.half
        self.du = widths[self.perm] / self.half
        self.udu = self.u * self.du
        self.dv = widths[self.perm]
        self.span = self.u[-1] - self.u[0]
        self.sig_min = _SIGMA_MIN * self.du.min()


def _axis_scale(x: np.ndarray) -> tuple[float, float]:
    """Centre and half-span of the spectral axis (half-span 1 for a single channel)."""
    lo, hi = float(x.min()), float(x.max())
    half = 0.5 * (hi - lo)
    return 0.5 * (hi + lo), (half if half > 0 else 1.0)


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
    axis = _Axis(x, dv)
    thr = None if threshold is None else float(threshold)
    for b0 in range(0, npix, _BATCH_PIXELS):
        b1 = min(npix, b0 + _BATCH_PIXELS)
        subs = [_scan(flat, s0, min(b1, s0 + _SUB_PIXELS), axis, thr, float(snr_cut), x is not None, ew)
                for s0 in range(b0, b1, _SUB_PIXELS)]  # fmt: skip
        if x is not None:
            _fit_batch(flat, [s for s in subs if s is not None], axis, thr, max_iter, fwhm)
    return fwhm.reshape(shape), ew.reshape(shape)


# -- whole-spectrum pass -------------------------------------------------------------------------


def _scan(flat, p0, p1, axis, thr, snr_cut, fit, ew_out):
    """EW of pixels ``p0:p1`` into ``ew_out``; with ``fit``, the fit start and window data.

    Channel-major on a ``(channel, pixel)`` copy of the block in ascending-axis order.
    Returns None or a dict: pixel indices, window ``lo, hi``, ``1 / peak``, half-power run
    ``lft, rgt``, ``sigma0`` and ``{window length: (candidate positions, raw windows)}``.
    """
    nz, npx = axis.n, p1 - p0
    width = npx + (-npx) % (16 // flat.itemsize)
    blk = np.empty((nz, width), dtype=flat.dtype)
    blk[:, :npx] = flat[:, p0:p1] if axis.identity else flat[axis.perm, p0:p1]
    blk[:, npx:] = np.nan
    fin = np.isfinite(blk)
    use = fin if thr is None else fin & (blk >= np.float64(thr))
    y0 = blk.copy()  # used samples, 0 elsewhere
    np.copyto(y0, 0, where=~use)
    peak = y0.max(axis=0)  # the used peak wherever it is > 0
    m0 = y0.astype(np.float64)
    m0 *= axis.dv[:, None]
    m0 = m0.sum(axis=0)  # in channel order, column by column
    ok = use.any(axis=0) & (m0 > 0) & (peak > 0)
    ok[npx:] = False
    cols = np.flatnonzero(ok)
    if snr_cut > 0 and cols.size:
        noise = MAD_TO_SIGMA * _mad(blk, fin, cols)
        cols = cols[peak[cols] >= snr_cut * noise]
    pk = peak[cols].astype(np.float64)
    ew_out[p0 + cols] = m0[cols] / pk
    if not fit or cols.size == 0:
        return None
    # first peak channel, then the half-power crossings around it
    down = np.arange(nz, 0, -1, dtype=np.int16 if nz < (1 << 15) else np.int32)[:, None]
    kp = nz - ((y0 == peak) * down).max(axis=0)[cols].astype(np.intp)
    inv = 1.0 / pk
    bounds, reach = _half_run(y0, use, cols, kp, 0.5 * peak[cols], axis, inv, _RUN_REACH), _RUN_REACH
    while True:
        far = np.isnan(bounds[2]) | np.isnan(bounds[3])
        if not far.any():
            break
        reach = nz + 1 if 4 * reach > nz else 4 * reach
        f = np.flatnonzero(far)
        sub = _half_run(y0, use, cols[f], kp[f], 0.5 * peak[cols[f]], axis, inv[f], reach)
        for b, sb in zip(bounds, sub, strict=True):
            b[f] = sb
    lft, rgt, xl, xr = bounds
    sig0 = (xr - xl) / FWHM_PER_SIGMA
    lo, hi = _window(axis.u, 0.5 * (xl + xr), _WIN_SIGMA * sig0, lft + 1, rgt)
    raws = _gather(blk.reshape(-1), width, cols, lo, hi, 1)
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
    kk = kp + np.arange(-reach, reach + 1)[:, None]
    idx = np.clip(kk, 0, nz - 1) * width + cols
    out = (kk < 0) | (kk >= nz)
    used = np.take(use.reshape(-1), idx) | out
    vals = np.where(out, 0, np.take(y0.reshape(-1), idx))
    below = ~(vals > half) | out
    res = []
    for rows, sign in ((range(reach - 1, -1, -1), -1), (range(reach + 1, 2 * reach + 1), 1)):
        found, pending = np.zeros(cols.size, bool), np.zeros(cols.size, bool)
        a_k, a_y, c_k, c_y = kp.copy(), vals[reach].astype(np.float64), kp.copy(), np.zeros(cols.size)
        end, e_a, e_ay, e_y = np.full(cols.size, -1), kp.copy(), np.zeros(cols.size), np.zeros(cols.size)
        for r in rows:
            live = ~found & used[r]
            conf = live & below[r] & pending  # a second sample at or below half: the run ended
            found |= conf
            end, e_a, e_ay, e_y = (np.where(conf, v, w) for v, w in ((c_k, end), (a_k, e_a), (a_y, e_ay), (c_y, e_y)))
            first = live & below[r] & ~pending
            c_k, c_y = np.where(first, kk[r], c_k), np.where(first, vals[r], c_y)
            pending |= first
            up = live & ~below[r]
            pending &= ~up
            a_k, a_y = np.where(up, kk[r], a_k), np.where(up, vals[r], a_y)
        edge = found & ((end < 0) | (end >= nz))
        e = np.clip(end, 0, nz - 1)
        ea = np.clip(e_a, 0, nz - 1)
        ya, ye = e_ay * inv, e_y * inv
        with np.errstate(invalid="ignore", divide="ignore"):
            x = u[e] + (u[ea] - u[e]) * ((0.5 - ye) / (ya - ye))
        x = np.where(edge, u[0] - 0.5 * du[0] if sign < 0 else u[-1] + 0.5 * du[-1], x)
        res.append((np.where(edge, -1 if sign < 0 else nz, end), np.where(found, x, np.nan)))
    (lft, xl), (rgt, xr) = res
    return [lft, rgt, xl, xr]


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


def _gather(src, stride, cols, lo, hi, chan):
    """``{length: (positions, raw (length, n))}``: samples ``src[chan[k] * stride + col]``.

    ``chan`` maps sorted channel ``k`` to a row of ``src`` (1 for the identity).
    """
    out = {}
    w = hi - lo
    for length in np.unique(w):
        pos = np.flatnonzero(w == length)
        k = lo[pos] + np.arange(length)[:, None]
        rows = k if isinstance(chan, int) else chan[k]
        out[int(length)] = (pos, np.take(src, rows * stride + cols[pos]))
    return out


# -- robust noise --------------------------------------------------------------------------------


def _transposed(blk: np.ndarray) -> np.ndarray:
    """``blk.T`` as a C-contiguous ``(pixel, channel)`` array (copied 16 bytes at a time)."""
    nz, npx = blk.shape
    k = 16 // blk.itemsize
    t = np.ascontiguousarray(blk.view(np.complex128).T)  # (npx / k, nz) of k-pixel groups
    t = t.view(blk.dtype).reshape(npx // k, nz, k)
    return np.ascontiguousarray(t.transpose(0, 2, 1)).reshape(npx, nz)


def _mad(blk: np.ndarray, fin: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Unscaled MAD of the finite samples of the columns ``cols`` of ``blk`` (NaN if none).

    One sort per spectrum: the median is read off the sorted finite values ``s``, and the
    absolute deviations are the two ascending runs ``med - s[h-1-j]`` and ``s[h+j] - med``
    (``h = n // 2``), whose ``k``-th smallest value a batched binary search finds. Same
    float64 values as sorting the deviations themselves.
    """
    t = _transposed(blk)
    if cols.size < t.shape[0]:
        t = t[cols]
    if not fin.all() and np.isinf(blk).any():
        t[np.isinf(t)] = np.nan  # +-inf are not finite samples: sort them last, like NaN
    s = np.sort(t, axis=1)
    nz = s.shape[1]
    n = nz - np.count_nonzero(np.isnan(s), axis=1)
    nn = np.maximum(n, 1)
    lo, hi = (nn - 1) // 2, nn // 2
    base = np.arange(s.shape[0]) * nz
    flat = s.reshape(-1)
    med = 0.5 * (flat[base + lo].astype(np.float64) + flat[base + hi])
    mad = 0.5 * (_kth_dev(flat, base, med, hi, nn, lo) + _kth_dev(flat, base, med, hi, nn, hi))
    return np.where(n > 0, mad, np.nan)


def _kth_dev(flat, base, med, h, n, k):
    """``k``-th smallest (0-based) of ``|s[:n] - med|`` per row, as the merge of two sorted runs."""

    def dev_a(j):  # j-th smallest deviation below the median: med - s[h - 1 - j]
        return med - flat[base + np.clip(h - 1 - j, 0, None)]

    def dev_b(j):  # j-th smallest deviation above the median: s[h + j] - med
        return flat[base + np.minimum(h + j, n - 1)] - med

    lo = np.maximum(0, k + 1 - (n - h))  # how many of the k + 1 smallest come from run A
    hi = np.minimum(k + 1, h)
    while True:
        live = lo < hi
        if not live.any():
            break
        mid = (lo + hi) // 2
        go = live & (dev_a(mid) < dev_b(k - mid))
        lo = np.where(go, mid + 1, lo)
        hi = np.where(live & ~go, mid, hi)
    i, j = lo, k + 1 - lo
    return np.maximum(np.where(i > 0, dev_a(i - 1), -np.inf), np.where(j > 0, dev_b(j - 1), -np.inf))


# -- fit -----------------------------------------------------------------------------------------


def _fit_batch(flat, subs, axis, thr, max_iter, fwhm_out):
    """Fit the candidates of a batch (the ``_scan`` results of its blocks) into ``fwhm_out``."""
    if not subs:
        return
    cat = {key: np.concatenate([s[key] for s in subs]) for key in ("pix", "lo", "hi", "inv", "lft", "rgt", "sig0")}
    pix, lo, hi, inv = cat["pix"], cat["lo"], cat["hi"], cat["inv"]
    parts, off = {}, 0
    for s in subs:
        for length, (pos, raw) in s["raws"].items():
            parts.setdefault(length, []).append((pos + off, raw))
        off += s["pix"].size
    raws = {length: (np.concatenate([p for p, _ in ps]), np.concatenate([r for _, r in ps], axis=1))
            for length, ps in parts.items()}  # fmt: skip
    u, nz = axis.u, axis.n
    win = _Windows(raws, lo, hi, inv, axis, thr)
    mu0 = win.run_mean(cat["lft"], cat["rgt"])
    a, mu, sig, conv = win.fit(np.stack([np.ones(pix.size), mu0, cat["sig0"]]), max_iter)
    for _ in range(_MAX_ROUNDS - 1):
        good = conv & (a > 0) & (mu >= u[0]) & (mu <= u[-1]) & (sig >= axis.sig_min) & (sig <= axis.span)
        need = good & (
            ((lo > 0) & (u[np.maximum(lo - 1, 0)] >= mu - _COVER_SIGMA * sig))
            | ((hi < nz) & (u[np.minimum(hi, nz - 1)] <= mu + _COVER_SIGMA * sig))
        )
        if not need.any():
            break
        k = np.flatnonzero(need)
        lo[k], hi[k] = _window(u, mu[k], _WIN_SIGMA * sig[k], nz, 0)
        raws = _gather(flat.reshape(-1), flat.shape[1], pix[k], lo[k], hi[k], axis.perm)
        win = _Windows(raws, lo[k], hi[k], inv[k], axis, thr)
        a[k], mu[k], sig[k], conv[k] = win.fit(np.stack([a[k], mu[k], sig[k]]), max_iter)
    good = conv & (a > 0) & (mu >= u[0]) & (mu <= u[-1]) & (sig >= axis.sig_min) & (sig <= axis.span)
    fwhm_out[pix] = np.where(good, FWHM_PER_SIGMA * axis.half * sig, np.nan)


class _Windows:
    """The fit windows of ``n`` pixels as ``(window, pixel)`` arrays, one group per length.

    Per group: positions ``pos``, unit-peak data ``y`` (0 where unused), axis ``u`` and, if
    some sample is unused, ``m`` (1 used / 0 unused). One column per pixel, so every sum over
    a window runs in channel order whatever the grouping.
    """

    def __init__(self, raws, lo, hi, inv, axis, thr):
        self.n = lo.size
        self.axis, self.lo = axis, lo
        self.ulo, self.uhi = axis.u[lo], axis.u[hi - 1]
        self.count = np.zeros(self.n, dtype=np.int64)
        self.groups = []
        for length, (pos, raw) in sorted(raws.items()):
            used = np.isfinite(raw)
            if thr is not None:
                used &= raw >= np.float64(thr)
            y = raw * inv[pos]
            m = None
            if not used.all():
                y[~used] = 0.0
                m = used.astype(np.float64)
            self.count[pos] = used.sum(axis=0)
            self.groups.append([pos, y, axis.u[lo[pos] + np.arange(length)[:, None]], m])
        self.p = np.zeros((3, self.n))
        self.live = np.zeros(self.n, dtype=bool)
        self.res = np.zeros((10, self.n))

    def run_mean(self, lft, rgt):
        """Moment start ``mu0 = sum y u du / sum y du`` over each pixel's half-power run."""
        out = np.empty(self.n)
        for pos, y, _u, _m in self.groups:
            k = self.lo[pos] + np.arange(y.shape[0])[:, None]
            run = (k > lft[pos]) & (k < rgt[pos])
            out[pos] = _colsum(y * self.axis.udu[k] * run) / _colsum(y * self.axis.du[k] * run)
        return out

    def fit(self, p, max_iter):
        """Batched LM from ``p`` (3, n): ``(A, mu, |sigma|, converged)``."""
        dof = np.maximum(self.count - 3, 1).astype(np.float64)
        out = _lm(self, p, dof, np.flatnonzero(self.count >= _MIN_SAMPLES), max_iter)
        return out[0], out[1], np.abs(out[2]), np.isfinite(out[0])

    def sums(self, act, p):
        """``chi^2``, ``J^T J`` and ``J^T r`` at parameters ``p`` (3, m) for the pixels ``act``.

        Also drops the windows of pixels no longer in ``act`` (once under half of a group is
        left) and merges the groups into one once few pixels remain.
        """
        self.p[:, act] = p
        self.live[:] = False
        self.live[act] = True
        if act.size < _TAIL_PIXELS and len(self.groups) > 1:
            self._merge()
        keep = []
        for g in self.groups:
            lv = self.live[g[0]]
            nl = np.count_nonzero(lv)
            if nl == 0:
                continue
            if 2 * nl < lv.size:
                g[:] = [g[0][lv], g[1][:, lv], g[2][:, lv], None if g[3] is None else g[3][:, lv]]
            keep.append(g)
            pos, y, u, m = g
            step = max(2, _EVAL_ELEMENTS // y.shape[0])
            for j0, j1 in _spans(pos.size, step):
                q = pos[j0:j1]
                mc = None if m is None else m[:, j0:j1]
                self.res[:, q] = _sums(y[:, j0:j1], u[:, j0:j1], mc, *self.p[:, q])
        self.groups = keep
        r = self.res[:, act]
        return r[0], r[1:7], r[7:10]

    def _merge(self):
        """One group of the live pixels, windows zero-padded at the end to the longest."""
        parts = []
        for pos, y, u, m in self.groups:
            lv = self.live[pos]
            if lv.any():
                parts.append((pos[lv], y[:, lv], u[:, lv], None if m is None else m[:, lv]))
        length = max(y.shape[0] for _p, y, _u, _m in parts)
        n = sum(pos.size for pos, *_ in parts)
        pos, y, u, m = np.empty(n, dtype=np.intp), np.zeros((length, n)), np.zeros((length, n)), np.zeros((length, n))
        j = 0
        for pp, yy, uu, mm in parts:
            w, c = yy.shape
            pos[j : j + c], y[:w, j : j + c], u[:w, j : j + c] = pp, yy, uu
            m[:w, j : j + c] = 1.0 if mm is None else mm
            j += c
        self.groups = [[pos, y, u, m]]


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


def _sums(y, u, m, a, mu, sig):
    """``chi^2``, ``J^T J`` (6 entries) and ``J^T r`` (3) of the Gaussian, stacked (10, n).

    With ``z = (u - mu) / sigma``, ``g = exp(-z^2 / 2)`` (0 on unused samples) and
    ``r = y - A g``: ``J = [g, (A/sigma) g z, (A/sigma) g z^2]``, so ``J^T J`` needs
    ``S_k = sum g^2 z^k`` (k = 0..4) and ``J^T r`` needs ``T_k = sum g r z^k`` (k = 0..2).
    """
    if y.shape[1] == 1:  # see _colsum
        y, u, m = (None if v is None else np.repeat(v, 2, axis=1) for v in (y, u, m))
        return _sums(y, u, m, np.repeat(a, 2), np.repeat(mu, 2), np.repeat(sig, 2))[:, :1]
    z = u - mu
    z *= 1.0 / sig
    z2 = z * z
    g = z2 * -0.5
    np.exp(g, out=g)
    if m is not None:
        g *= m
    r = g * a
    np.subtract(y, r, out=r)
    t = r * r
    chi2 = t.sum(axis=0)
    r *= g
    t0 = r.sum(axis=0)
    t1 = np.multiply(r, z, out=t).sum(axis=0)
    t2 = np.multiply(r, z2, out=t).sum(axis=0)
    g *= g
    s0 = g.sum(axis=0)
    s1 = np.multiply(g, z, out=t).sum(axis=0)
    g *= z2
    s2 = g.sum(axis=0)
    s3 = np.multiply(g, z, out=t).sum(axis=0)
    s4 = np.multiply(g, z2, out=t).sum(axis=0)
    c = a / sig
    return np.stack([chi2, s0, c * s1, c * s2, c * c * s2, c * c * s3, c * c * s4, t0, c * t1, c * t2])


def _solve(h: np.ndarray, b: np.ndarray, lam: np.ndarray):
    """Solve ``(H + lam diag H) d = b`` by 3x3 Cholesky; ``ok`` False where not positive definite."""
    h00, h01, h02, h11, h12, h22 = h
    with np.errstate(invalid="ignore", divide="ignore"):
        m00, m11, m22 = h00 * (1 + lam), h11 * (1 + lam), h22 * (1 + lam)
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
    return x0, x1, x2, ok


def _lm(win: _Windows, p0: np.ndarray, dof: np.ndarray, act: np.ndarray, max_iter: int) -> np.ndarray:
    """Batched LM of the pixels ``act`` from ``p0`` (3, n); (3, n) result, NaN where failed."""
    out = np.full(p0.shape, np.nan)
    p, dof = p0[:, act], dof[act]
    lam, nu = np.full(act.size, _LAMBDA0), np.full(act.size, 2.0)
    chi2, h, b = win.sums(act, p)
    sig_min, sig_max = win.axis.sig_min, win.axis.span
    for _ in range(max_iter):
        if act.size == 0:
            break
        d0, d1, d2, ok = _solve(h, b, lam)
        # predicted chi^2 decrease of the step: b.d + lam d.diag(H).d
        pred = b[0] * d0 + b[1] * d1 + b[2] * d2 + lam * (h[0] * d0 * d0 + h[3] * d1 * d1 + h[5] * d2 * d2)
        tol = _STAT_TOL * chi2 / dof
        sig = np.abs(p[2])
        # A (near) Gauss-Newton step that would move (almost) nothing: at the minimum.
        small = (pred <= tol) | (
            (np.abs(d0) <= _XTOL * np.abs(p[0])) & (np.abs(d1) <= _XTOL * sig) & (np.abs(d2) <= _XTOL * sig)
        )
        done = ok & (lam < 1.0) & small
        if done.any():
            out[:, act[done]] = p[:, done]
            k = ~done
            act, p, dof, chi2, h, b, lam, nu = act[k], p[:, k], dof[k], chi2[k], h[:, k], b[:, k], lam[k], nu[k]
            d0, d1, d2, ok, pred, tol = d0[k], d1[k], d2[k], ok[k], pred[k], tol[k]
            if act.size == 0:
                break
        pn = np.where(ok, p + np.stack([d0, d1, d2]), p)
        ok &= pn[2] != 0
        c2, hn, bn = win.sums(act, pn)
        acc = ok & (c2 < chi2)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            rho = (chi2 - c2) / pred
            shrink = np.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        done = (acc & (chi2 - c2 <= np.maximum(_FTOL * chi2, tol))) | (lam * nu > _LAMBDA_MAX) & ~acc
        lam = np.where(acc, np.maximum(lam * shrink, _LAMBDA_MIN), lam * nu)
        nu = np.where(acc, 2.0, 2.0 * nu)
        p, chi2 = np.where(acc, pn, p), np.where(acc, c2, chi2)
        h, b = np.where(acc, hn, h), np.where(acc, bn, b)
        sig = np.abs(p[2])
        # a step out of the physical region ends the fit as failed: no line, or unresolved
        bad = acc & (
            (p[0] <= 0) | (sig < sig_min) | (sig > sig_max) | (p[1] < win.ulo[act]) | (p[1] > win.uhi[act])
        )
        done &= ~bad
        if done.any() or bad.any():
            out[:, act[done]] = p[:, done]
            k = ~(done | bad)
            act, p, dof, chi2, h, b, lam, nu = act[k], p[:, k], dof[k], chi2[k], h[:, k], b[:, k], lam[k], nu[k]
    return out

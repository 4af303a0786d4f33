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
_LAMBDA0, _LAMBDA_MAX, _FTOL, _XTOL = 1e-3, 1e12, 1e-12, 1e-7
_MIN_SAMPLES = 4
#: Window half-width in sigma when built, and the half-width a fit's window must cover.
_WIN_SIGMA, _COVER_SIGMA = 4.5, 4.0
#: Window lengths are multiples of this many channels (and at least this many).
_WIN_STEP = 8
#: Fits per pixel at most (the first and up to two with a wider or moved window).
_MAX_ROUNDS = 3
#: Pixels per block of the whole-spectrum pass, and samples per block of an LM evaluation.
_BLOCK_PIXELS = 1 << 14
_EVAL_ELEMENTS = 1 << 15


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
    """The spectral axis in ascending order: permutation, ``u``, ``du``, ``u du`` and widths."""

    def __init__(self, coords: np.ndarray | None, widths: np.ndarray) -> None:
        nz = widths.size
        x = np.zeros(nz) if coords is None else coords
        self.perm = np.argsort(x, kind="stable")
        self.identity = bool(np.array_equal(self.perm, np.arange(nz)))
        centre, self.half = _axis_scale(x) if nz else (0.0, 1.0)
        self.u = (x[self.perm] - centre) / self.half
        self.du = widths[self.perm] / self.half
        self.udu = self.u * self.du
        self.dv = widths[self.perm]
        self.n = nz


def _axis_scale(x: np.ndarray) -> tuple[float, float]:
    """Centre and half-span of the spectral axis (half-span 1 for a single channel)."""
    lo, hi = float(x.min()), float(x.max())
    half = 0.5 * (hi - lo)
    return 0.5 * (hi + lo), (half if half > 0 else 1.0)


def _run(cube, coords, widths, snr_cut, threshold, max_iter):
    """Validate, then FWHM (NaN where not fitted) and EW maps, block by block of pixels."""
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
    if a.dtype != np.float32:
        a = a.astype(np.float64, copy=False)
    axis = _Axis(x, dv)
    flat = a.reshape(nz, npix)
    thr = None if threshold is None else float(threshold)
    for p0 in range(0, npix, _BLOCK_PIXELS):
        p1 = min(npix, p0 + _BLOCK_PIXELS)
        _block(flat, p0, p1, axis, thr, float(snr_cut), max_iter if coords is not None else None, fwhm, ew)
    return fwhm.reshape(shape), ew.reshape(shape)


def _block(flat, p0, p1, axis, thr, snr_cut, max_iter, fwhm_out, ew_out):
    """EW (and, when ``max_iter`` is not None, FWHM) of pixels ``p0:p1`` into the outputs."""
    nz, npix = p1 - p0, None  # noqa: F841  (npix unused; kept for symmetry with the GPU code)
    npx = p1 - p0
    pad = (-npx) % (16 // flat.dtype.itemsize)
    blk = np.empty((axis.n, npx + pad), dtype=flat.dtype)
    src = flat[:, p0:p1] if axis.identity else flat[axis.perm, p0:p1]
    blk[:, :npx] = src
    if pad:
        blk[:, npx:] = np.nan
    fin = np.isfinite(blk)
    use = fin if thr is None else fin & (blk >= np.float64(thr))
    y0 = np.where(use, blk, 0)  # used samples, 0 elsewhere
    peak = y0.max(axis=0)
    m0 = axis.dv @ y0
    ok = use.any(axis=0) & (m0 > 0) & (peak > 0)
    ok[npx:] = False
    if snr_cut > 0 and ok.any():
        cols = np.flatnonzero(ok)
        noise = MAD_TO_SIGMA * _mad(blk, fin, cols)
        ok[cols] = peak[cols] >= snr_cut * noise
    cols = np.flatnonzero(ok)
    pk = peak[cols].astype(np.float64)
    ew_out[p0 + cols] = m0[cols] / pk
    if max_iter is None or cols.size == 0:
        return
    fwhm_out[p0 + cols] = _fit_block(blk, y0, cols, pk, axis, thr, max_iter)


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
    if not fin.all():
        t[~np.isfinite(t)] = np.nan  # +-inf are not finite samples: sort them last, like NaN
    s = np.sort(t, axis=1)
    n = np.count_nonzero(~np.isnan(s), axis=1)
    nn = np.maximum(n, 1)
    lo, hi = (nn - 1) // 2, nn // 2
    rows = np.arange(s.shape[0])
    med = 0.5 * (s[rows, lo].astype(np.float64) + s[rows, hi])
    mad = 0.5 * (_kth_dev(s, rows, med, hi, nn, lo) + _kth_dev(s, rows, med, hi, nn, hi))
    return np.where(n > 0, mad, np.nan)


def _kth_dev(s, rows, med, h, n, k):
    """``k``-th smallest (0-based) of ``|s[:n] - med|`` per row, as the merge of two sorted runs."""

    def dev_a(j):  # j-th smallest deviation below the median
        return med - s[rows, np.clip(h - 1 - j, 0, None)]

    def dev_b(j):  # j-th smallest deviation above the median
        return s[rows, np.minimum(h + j, n - 1)] - med

    na, nb = h, n - h
    lo = np.maximum(0, k + 1 - nb)  # elements of the first k + 1 taken from run A
    hi = np.minimum(k + 1, na)
    while True:
        live = lo < hi
        if not live.any():
            break
        mid = (lo + hi) // 2
        go = live & (dev_a(mid) < dev_b(k - mid))
        lo = np.where(go, mid + 1, lo)
        hi = np.where(live & ~go, mid, hi)
    i, j = lo, k + 1 - lo
    with np.errstate(invalid="ignore"):
        va = np.where(i > 0, dev_a(i - 1), -np.inf)
        vb = np.where(j > 0, dev_b(j - 1), -np.inf)
    return np.maximum(va, vb)


# -- start and windows ---------------------------------------------------------------------------


def _fit_block(blk, y0, cols, pk, axis, thr, max_iter):
    """FWHM (float64, NaN where failed) of the candidate columns ``cols`` of a block."""
    nz = axis.n
    npx = blk.shape[1]
    ch = np.arange(nz)[:, None]
    yc = y0[:, cols]
    half = (0.5 * pk).astype(y0.dtype)  # exact: a power-of-two scaling of a data value
    # first peak channel, then the nearest channel at or below half power on each side
    kp = nz - 1 - ((yc == yc.max(axis=0)) * np.arange(nz, 0, -1, dtype=np.int32)[:, None]).max(axis=0) + 1
    kp = kp - 0  # (nz - max(nz - k)) = first k with the peak value
    below = ~(yc > half)
    l_ = ((below & (ch < kp)) * np.arange(1, nz + 1, dtype=np.int32)[:, None]).max(axis=0) - 1
    r_ = nz - ((below & (ch > kp)) * np.arange(nz, 0, -1, dtype=np.int32)[:, None]).max(axis=0)
    inv = 1.0 / pk
    u, du = axis.u, axis.du
    lc, rc = np.maximum(l_, 0), np.minimum(r_, nz - 1)
    ylo = yc[lc, np.arange(cols.size)] * inv
    yl1 = yc[l_ + 1, np.arange(cols.size)] * inv
    yhi = yc[rc, np.arange(cols.size)] * inv
    yr1 = yc[r_ - 1, np.arange(cols.size)] * inv
    with np.errstate(invalid="ignore", divide="ignore"):
        xl = np.where(l_ >= 0, u[lc] + (u[l_ + 1] - u[lc]) * ((0.5 - ylo) / (yl1 - ylo)), u[0] - 0.5 * du[0])
        xr = np.where(r_ < nz, u[rc] - (u[rc] - u[r_ - 1]) * ((0.5 - yhi) / (yr1 - yhi)), u[-1] + 0.5 * du[-1])
    sig0 = (xr - xl) / FWHM_PER_SIGMA
    lo, hi = _window(u, 0.5 * (xl + xr), _WIN_SIGMA * sig0, l_ + 1, r_)
    win = _Windows(blk, cols, lo, hi, inv, axis, thr)
    # moment mean over the run
    k = lo[None, :] + np.arange(win.width)[:, None]
    run = (k > l_) & (k < r_)
    mu0 = _colsum(win.y * win.udu * run) / _colsum(win.y * win.du * run)
    p = np.stack([np.ones(cols.size), mu0, sig0])
    return _fit_rounds(win, p, lo, hi, axis, max_iter, blk, cols, inv, thr) * axis.half, npx


def _colsum(x: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in order (one column per pixel)."""
    return x.sum(axis=0)


def _window(u, centre, halfw, run_lo, run_hi):
    """Fit window ``[lo, hi)`` (sorted channels): ``|u - centre| <= halfw`` and the run, rounded."""
    nz = u.size
    lo = np.searchsorted(u, centre - halfw, side="left")
    hi = np.searchsorted(u, centre + halfw, side="right")
    lo = np.minimum(lo, run_lo)
    hi = np.maximum(np.maximum(hi, run_hi), lo)
    w = hi - lo
    wb = np.minimum(nz, np.maximum(_WIN_STEP, -(-w // _WIN_STEP) * _WIN_STEP))
    lo = np.clip(lo - (wb - w) // 2, 0, nz - wb)
    return lo, lo + wb

"""Line widths, compiled: the per-pixel Gaussian fit, one spectrum per iteration of a parallel loop.

Same maps, blanking, fit and acceptance rules as the oracle :mod:`cpu_fallback.linewidth` (its module
notes define them step by step): ``EW = sum(I dv) / max(I)`` over the used samples (finite, and
``>= threshold`` when given); a pixel is blank without a used sample, for ``M0 <= 0`` or
``peak <= 0``, or for ``peak < snr_cut * 1.4826 MAD`` (all finite samples); ``FWHM = 2.3548 sigma``
of the Levenberg-Marquardt fit of ``A exp(-(v - mu)^2 / 2 sigma^2)`` (same start from the
half-power run, same window rule, same sums, Newton / Gauss-Newton step, damping, stopping and
re-windowing rules), kept only when :func:`kernel_common.linefit.significant` accepts it: centre
inside the channel range, FWHM from ``1.18`` of the narrowest channel to the window width, fitted
peak ``>= 3`` and integrated SNR over ``+-1 FWHM >= 6`` times the robust noise of the residuals,
and ``A >= 3 sigma_A``.

Algorithm. The spatial pixels of a block are cut into tasks of up to 64 pixels of one row; a
``prange`` runs the tasks (interleaved in 64 stripes over the block, so that every thread gets a
share of the line-rich centre and of the empty edges). A task decodes its ``(nz, 64)`` slab of the
stored data (:mod:`cpu_fallback.compiled.rawdata`: byte order, BSCALE/BZERO/BLANK inline; no
float64 or native-order copy of the cube), then fits its pixels one after the other, each in
registers and a few ``nz``-long scratch rows (:mod:`cpu_fallback.compiled._linewidth_pixel`): the
scan for ``M0``, the peak and its first channel, the SNR cut, the fit over the packed used samples of
its window, and the acceptance rule, all in float64 over float32 samples. The two robust noises (of
the spectrum for the SNR cut, of the fit residuals for the acceptance rule) enter only as ``s <=
bound``: the median is selected exactly (quickselect, :mod:`cpu_fallback.compiled._linewidth_numerics`)
and one counting pass over the deviations decides the MAD against the bound, with a 1e-9 relative
margin; only a MAD within that margin of its bound is computed exactly (a second selection), so the
verdicts are the oracle's.

Agreement with the oracle (tests in ``tests/kernels/test_compiled_linewidth.py``). Every sum runs
in the oracle's channel order with the oracle's operations and the order statistics are the same
values; the only differing primitive is ``exp`` (a branch-free polynomial within 1 ulp of NumPy's,
:func:`cpu_fallback.compiled._linewidth_numerics.vexp`, so the window loops vectorise). So EW maps
are identical and the FWHM maps agree to ``|a - b| <= 1e-5 |b|`` with the same accepted pixel set
(measured: bit-identical FWHM on NGC 5921 and on the 512x512x256 synthetic cube of the benchmark,
196416 accepted pixels) -- a fit within ~1e-13 of an acceptance threshold could flip; none does on
the test cubes. Values are float32 samples: a float64 in-memory cube is rounded to float32 first
(the server's reads are float32 in both paths).

Chunking: a pixel's maps depend only on its own spectrum, so any y-slab gives the same maps.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numpy.typing import ArrayLike, NDArray

from cpu_fallback.compiled import runtime
from cpu_fallback.compiled._linewidth_pixel import constants, fit, passes_noise_cut, significant
from cpu_fallback.compiled.rawdata import load_row, raw_args, scratch
from kernel_common.constants import FWHM_PER_SIGMA
from kernel_common.linefit import SpectralAxis

#: Pixels of one row per task of the parallel loop, and stripes the tasks are interleaved over.
TASK_PIXELS, STRIPES = 64, 64


@njit(cache=True, error_model="numpy")
def _pixel(so, nz, perm, ax, opt, c, buf, wk):  # noqa: C901
    """FWHM and EW (float32, NaN where blank) of the spectrum ``so`` (original channel order)."""
    u, du, udu, dv, uo, duo = ax
    use_thr, thr, snr_cut, uniform, half_span, sig_min, span, sig_max, max_iter, do_fit, order = opt
    nan = np.float32(np.nan)
    peak = np.float32(0.0)
    kp = 0
    m0 = 0.0
    for k in range(nz):  # sorted order: M0 summed in the oracle's order, first peak channel
        v = so[perm[k]]
        y = v if (np.isfinite(v) and (not use_thr or np.float64(v) >= thr)) else np.float32(0.0)
        if k == 0 or y > peak:
            peak, kp = y, k
        m0 += np.float64(y) if uniform else np.float64(y) * dv[k]
    if uniform:
        m0 = dv[0] * m0
    if not (m0 > 0 and peak > 0):
        return nan, nan
    if snr_cut > 0 and not passes_noise_cut(so, nz, peak, snr_cut, buf):
        return nan, nan
    ew = np.float32(m0 / np.float64(peak))
    if not do_fit:
        return nan, ew
    a, mu, sig, inv = fit(so, perm, u, du, udu, nz, kp, peak, use_thr, thr, sig_min, span, max_iter, c, wk)
    if not np.isfinite(a):
        return nan, ew
    if not significant(so, nz, u, uo, duo, order, use_thr, thr, a, mu, sig, inv, sig_min, sig_max, c, buf, wk):
        return nan, ew
    return np.float32(FWHM_PER_SIGMA * half_span * sig), ew


@njit(parallel=True, cache=True, error_model="numpy")
def _kernel(flat, geo, dec, perm, ax, opt, c, fwhm, ew):
    """FWHM and EW maps ``(ny, nx)`` of a raw block (see the module docstring)."""
    nz, ny, nx, sz, sy, sx = geo
    nchunk = (nx + TASK_PIXELS - 1) // TASK_PIXELS
    ntask = ny * nchunk
    stripes = min(STRIPES, ntask)
    per = (ntask + stripes - 1) // stripes
    for i in prange(stripes * per):
        t = (i % stripes) * per + i // stripes  # thread blocks of i take every stripe
        if t >= ntask:
            continue
        y = t // nchunk
        x0 = (t % nchunk) * TASK_PIXELS
        n = min(TASK_PIXELS, nx - x0)
        rowbuf = scratch(flat, n)
        row = rowbuf[3]
        blk = np.empty((nz, n), np.float32)
        for z in range(nz):
            load_row(flat, z * sz + y * sy + x0 * sx, sx, n, dec, rowbuf)
            for j in range(n):
                blk[z, j] = row[j]
        so = np.empty(nz, np.float32)
        buf = np.empty(nz, np.float64)
        wk = np.empty((4, nz), np.float64)
        for j in range(n):
            for z in range(nz):
                so[z] = blk[z, j]
            f, e = _pixel(so, nz, perm, ax, opt, c, buf, wk)
            fwhm[y, x0 + j] = f
            ew[y, x0 + j] = e


def _run(raw, coords, widths, snr_cut, threshold, max_iter, bscale, bzero, blank, do_fit):
    if getattr(raw, "ndim", 0) != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {getattr(raw, 'shape', None)}")
    nz, ny, nx = raw.shape
    dv = np.asarray(widths, dtype=np.float64)
    if dv.shape != (nz,):
        raise ValueError(f"widths must have shape ({nz},), got {dv.shape}")
    x = None
    if coords is not None:
        x = np.asarray(coords, dtype=np.float64)
        if x.shape != (nz,):
            raise ValueError(f"coords must have shape ({nz},), got {x.shape}")
    fwhm = np.full((ny, nx), np.nan, np.float32)
    ew = np.full((ny, nx), np.nan, np.float32)
    if nz == 0 or ny * nx == 0:
        return fwhm, ew
    args = raw_args(raw, bscale, bzero, blank)
    axis = SpectralAxis(x, dv)
    ax = (axis.u, axis.du, axis.udu, axis.dv, axis.u_orig, axis.du_orig)
    opt = (threshold is not None, float(threshold or 0.0), float(snr_cut), axis.uniform, float(axis.half),
           float(axis.sig_min), float(axis.span), float(axis.sig_max), int(max_iter), bool(do_fit),
           {"same": 0, "reversed": 1}.get(axis.order, 2))
    with runtime.threads(raw.size):
        _kernel(args.flat, args.geo, args.dec, axis.perm.astype(np.int64), ax, opt, constants(), fwhm, ew)
    return fwhm, ew


def gaussian_linewidth_raw(
    raw: np.ndarray,
    coords: ArrayLike,
    widths: ArrayLike,
    *,
    snr_cut: float = 3.0,
    threshold: float | None = None,
    max_iter: int = 100,
    bscale: float = 1.0,
    bzero: float = 0.0,
    blank: int | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Gaussian FWHM and equivalent-width maps of a block of stored FITS data (oracle rules).

    Parameters
    ----------
    raw : numpy.ndarray
        ``(nz, ny, nx)`` view of the data as stored (``>f4``, scaled integers, ..., any byte order,
        non-negative strides), e.g. :meth:`app.io.fits_reader.CubeSource.read_raw`; a native float32
        cube works too. Not copied.
    coords : array_like
        ``(nz,)`` channel centres ``v_i`` (e.g. km/s), monotonic or not.
    widths : array_like
        ``(nz,)`` channel widths ``dv_i > 0``, same unit.
    snr_cut : float, optional
        Peak over robust noise below which a pixel is blank; 0 disables. Default 3.
    threshold : float or None, optional
        If given, only samples ``>= threshold`` (data units) enter EW and the fit.
    max_iter : int, optional
        Levenberg-Marquardt steps per fit before it counts as failed. Default 100.
    bscale, bzero, blank
        FITS scaling and integer blank value (:func:`cpu_fallback.compiled.rawdata.raw_args`).

    Returns
    -------
    fwhm, ew : numpy.ndarray
        ``(ny, nx)`` float32: ``2.3548 sigma`` in the unit of ``coords`` (NaN where blank, failed or
        not accepted) and ``sum(I dv) / max(I)`` in the unit of ``widths`` (NaN where blank).

    Raises
    ------
    ValueError
        Bad shapes, or an unsupported raw data type.
    """
    return _run(raw, coords, widths, snr_cut, threshold, max_iter, bscale, bzero, blank, True)


def equivalent_width_raw(
    raw: np.ndarray,
    widths: ArrayLike,
    *,
    snr_cut: float = 0.0,
    threshold: float | None = None,
    bscale: float = 1.0,
    bzero: float = 0.0,
    blank: int | None = None,
) -> NDArray[np.float32]:
    """Equivalent-width map ``sum(I dv) / max(I)`` of a block of stored FITS data (no fit).

    Parameters as :func:`gaussian_linewidth_raw` (``snr_cut`` default 0: no cut).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 EW in the unit of ``widths``; NaN for blank pixels.
    """
    return _run(raw, None, widths, snr_cut, threshold, 0, bscale, bzero, blank, False)[1]


#: FWHM per sigma, as the oracle exports it.
__all__ = ["FWHM_PER_SIGMA", "equivalent_width_raw", "gaussian_linewidth_raw"]

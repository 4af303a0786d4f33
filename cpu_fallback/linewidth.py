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
7. *Acceptance* (:func:`kernel_common.linefit.significant`, the same array code in both trees):
   only a significant, well-constrained fit keeps its FWHM -- centre inside the axis, FWHM from
   ``2.3548 sigma_min`` to the window width (the channel range given), fitted peak ``>= 3`` and
   integrated SNR over ``+-1 FWHM`` ``>= 6`` times the robust noise of the fit residuals, and
   ``A >= 3 sigma_A``; every other pixel is NaN (pure noise: ~1e-4 of the pixels pass).

The window keeps every sample within ``4.5 sigma`` of the line (the model is below ``e^-10``
of the peak beyond), so the result is the whole-spectrum least-squares fit to far better
than its statistical error (on NGC 5921 within 1.2e-4 of ``scipy.optimize.curve_fit``
over the whole spectrum), at the cost of a few dozen channels per pixel.

Modules: this driver, :mod:`cpu_fallback._linewidth_scan` (whole-spectrum pass, robust noise),
:mod:`cpu_fallback._linewidth_windows` (fit windows, LM sums), :mod:`cpu_fallback._linewidth_lm`
(LM steps); the axis, the constants and the acceptance rule are in :mod:`kernel_common.linefit`.

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

from cpu_fallback._linewidth_lm import _fit_batch
from cpu_fallback._linewidth_scan import _scan, _Scratch
from kernel_common.constants import FWHM_PER_SIGMA as FWHM_PER_SIGMA
from kernel_common.constants import MAD_TO_SIGMA as MAD_TO_SIGMA
from kernel_common.linefit import SpectralAxis

_Array = np.ndarray
#: Pixels per block of the whole-spectrum pass and per LM batch.
_SUB_PIXELS, _BATCH_PIXELS = 2048, 1 << 16


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
    axis, buf = SpectralAxis(x, dv), _Scratch()
    thr = None if threshold is None else float(threshold)
    for b0 in range(0, npix, _BATCH_PIXELS):
        b1 = min(npix, b0 + _BATCH_PIXELS)
        subs = [_scan(flat, s0, min(b1, s0 + _SUB_PIXELS), axis, thr, float(snr_cut), x is not None, ew, buf)
                for s0 in range(b0, b1, _SUB_PIXELS)]  # fmt: skip
        subs = [s for s in subs if s is not None]
        if subs:
            _fit_batch(flat, subs, axis, thr, max_iter, fwhm, buf)
    return fwhm.reshape(shape), ew.reshape(shape)

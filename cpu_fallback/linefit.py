"""Gaussian line-fit maps on the CPU: amplitude, centre and sigma with 1-sigma errors, reduced chi^2.

Backs ``POST /v1/spectral/linefit``. The one-component fit *is* the line-width fit of
:mod:`cpu_fallback.linewidth` (same start, windows, Levenberg-Marquardt steps and acceptance
rule, through its own building blocks ``_scan``, ``_Fit`` and ``_lm``): a pixel has a fit exactly
where ``gaussian_linewidth`` gives a finite FWHM, and there ``2.3548 * sigma`` is that FWHM.
Where the line-width map keeps only the FWHM, this kernel keeps the three parameters and hands
the accepted pixels to :func:`kernel_common.gaussfit.fit_columns` -- array code shared with the
GPU twin -- for the errors (``(J^T J)^-1`` scaled by ``RSS / (n - 3)``, as ``curve_fit``'s default),
the reduced chi^2 and, with ``components=2``, the two-component fit and its acceptance (the
module notes of :mod:`kernel_common.gaussfit` give the formulas and rules). The errors and
chi^2 are over the whole channel range given (all used samples), as a ``curve_fit`` of the
whole spectrum would be.
"""

from __future__ import annotations

import numpy as np

from cpu_fallback._linewidth_lm import _fit_batch
from cpu_fallback._linewidth_scan import _scan, _Scratch
from kernel_common.gaussfit import chunk_columns, empty_maps, fit_columns
from kernel_common.linefit import SpectralAxis

_Array = np.ndarray
#: Pixels per block of the whole-spectrum pass and per LM batch (as the line-width kernel).
_SUB_PIXELS, _BATCH_PIXELS = 2048, 1 << 16


def gaussian_linefit(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    *,
    components: int = 1,
    snr_cut: float = 3.0,
    threshold: float | None = None,
    max_iter: int = 100,
) -> dict[str, _Array]:
    """Per-pixel Gaussian fit parameters, their 1-sigma errors and the reduced chi^2.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` intensities; non-finite values are blank. Any float dtype.
    coords : numpy.ndarray
        ``(nz,)`` channel centres ``v_i`` (e.g. km/s), monotonic or not.
    widths : numpy.ndarray
        ``(nz,)`` channel widths ``dv_i > 0`` in the same unit.
    components : int, optional
        1 (default) or 2: also try two Gaussians where one is accepted, keeping them when the
        BIC rule of :mod:`kernel_common.gaussfit` says so.
    snr_cut : float, optional
        Peak over robust noise below which a pixel is not fitted; 0 disables. Default 3.
    threshold : float or None, optional
        If given, only samples ``>= threshold`` enter the fit.
    max_iter : int, optional
        Levenberg-Marquardt steps per fit before it counts as failed. Default 100.

    Returns
    -------
    dict of numpy.ndarray
        float32 maps: ``amplitude`` (data unit), ``centre`` and ``sigma`` (unit of ``coords``)
        and ``amplitude_err``, ``centre_err``, ``sigma_err``, each ``(components, ny, nx)``
        with components ordered by centre; ``reduced_chi2`` ``(ny, nx)``; ``ncomp``
        ``(ny, nx)``: 0 (no accepted fit: every map NaN), 1 or 2 components.
    """
    if components not in (1, 2):
        raise ValueError(f"components must be 1 or 2, got {components}")
    a = np.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    nz, ny, nx = a.shape
    dv = np.asarray(widths, dtype=np.float64)
    x = np.asarray(coords, dtype=np.float64)
    if dv.shape != (nz,) or x.shape != (nz,):
        raise ValueError(f"coords and widths must have shape ({nz},), got {x.shape} and {dv.shape}")
    out = empty_maps(components, (ny * nx,), np)
    npix = ny * nx
    if npix and nz:
        flat = np.ascontiguousarray(a.reshape(nz, npix), dtype=np.float32 if a.dtype == np.float32 else np.float64)
        axis = SpectralAxis(x, dv)
        par = _accepted_fits(flat, axis, snr_cut, threshold, max_iter)
        pix = np.flatnonzero(np.isfinite(par[0]))
        step = chunk_columns(nz)
        for j0 in range(0, pix.size, step):
            k = pix[j0 : j0 + step]
            res = fit_columns(flat[:, k], par[:, k], axis, threshold, components, max_iter, np)
            for name, value in res.items():
                out[name][..., k] = value
    return {name: value.reshape(value.shape[:-1] + (ny, nx)) for name, value in out.items()}


def _accepted_fits(flat: _Array, axis: SpectralAxis, snr_cut: float, threshold: float | None,
                  max_iter: int) -> _Array:
    """The line-width kernel's accepted fits of the ``(nz, npix)`` spectra ``flat``.

    Returns
    -------
    numpy.ndarray
        ``(4, npix)`` float64: ``A`` (relative to the peak), ``mu``, ``|sigma|`` (scaled axis)
        and ``1 / peak``; NaN where the line-width map is NaN.
    """
    npix = flat.shape[1]
    par = np.full((4, npix), np.nan)
    ew = np.full(npix, np.nan, dtype=np.float32)
    buf = _Scratch()
    thr = None if threshold is None else float(threshold)
    for b0 in range(0, npix, _BATCH_PIXELS):
        b1 = min(npix, b0 + _BATCH_PIXELS)
        subs = [_scan(flat, s0, min(b1, s0 + _SUB_PIXELS), axis, thr, float(snr_cut), True, ew, buf)
                for s0 in range(b0, b1, _SUB_PIXELS)]  # fmt: skip
        subs = [s for s in subs if s is not None]
        if subs:
            _fit_batch(flat, subs, axis, thr, max_iter, None, buf, par_out=par)
    return par

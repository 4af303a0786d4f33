"""Gaussian line-fit maps on the GPU: amplitude, centre and sigma with 1-sigma errors, reduced chi^2.

Same public function and signature as :mod:`cpu_fallback.linefit`, whose module notes define the
maps; arrays in and out are CuPy arrays on the current device. CuPy is imported inside the
function.

The one-component fit is the line-width kernel's own (``visivo_linewidth_lm`` of
:mod:`gpu_kernels.linewidth`, one CUDA thread per pixel, which writes the fitted parameters of
every physical fit) followed by the shared acceptance rule :func:`kernel_common.linefit.significant`
-- so a pixel has a fit exactly where the GPU line-width map has a finite FWHM. The accepted
pixels then go, in column chunks, through :func:`kernel_common.gaussfit.fit_columns` (errors,
reduced chi^2, the two-component fit): the same array code the CPU tree runs, here with CuPy.
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance
from gpu_kernels.linewidth import _check_contiguous, _kernel, _noise
from kernel_common.gaussfit import chunk_columns, empty_maps, fit_columns
from kernel_common.linefit import SpectralAxis, check_columns, significant

#: Agreement with the CPU reference (GPU parity tests, start-up self-test). The parameters come
#: from the same float64 arithmetic (the line-width kernel matches NumPy to the last bit of
#: ``exp``); the two-component LM is array code in both trees.
PARITY = Tolerance(rtol=1e-4, atol=1e-6)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("gaussian_linefit", ("cube", "v", "w"), {"snr_cut": 3.0}),
    Case("gaussian_linefit", ("cube", "v", "w"), {"snr_cut": 3.0, "components": 2}),
)

_Array = Any
_THREADS = 128


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
    """Per-pixel Gaussian fit parameters, errors and reduced chi^2 on the device; see the CPU twin.

    Returns
    -------
    dict of cupy.ndarray
        float32 ``amplitude``, ``centre``, ``sigma`` and their ``*_err`` as
        ``(components, ny, nx)``; ``reduced_chi2`` and ``ncomp`` as ``(ny, nx)``.
    """
    import cupy as cp
    import numpy as np

    if components not in (1, 2):
        raise ValueError(f"components must be 1 or 2, got {components}")
    a = cp.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    nz, ny, nx = a.shape
    dv = np.asarray(cp.asnumpy(widths), dtype=np.float64)  # sync (nz values)
    x = np.asarray(cp.asnumpy(coords), dtype=np.float64)  # sync
    if dv.shape != (nz,) or x.shape != (nz,):
        raise ValueError(f"coords and widths must have shape ({nz},), got {x.shape} and {dv.shape}")
    npix = ny * nx
    out = empty_maps(components, (npix,), cp)
    if npix and nz:
        axis = SpectralAxis(x, dv)
        data_t = "float" if a.dtype == cp.float32 else "double"
        flat = cp.ascontiguousarray(a.reshape(nz, npix), dtype=cp.float32 if data_t == "float" else cp.float64)
        par = _accepted_fits(flat, axis, data_t, snr_cut, threshold, max_iter)
        pix = cp.flatnonzero(cp.isfinite(par[0]))
        step = chunk_columns(nz)
        for j0 in range(0, int(pix.size), step):
            k = pix[j0 : j0 + step]
            res = fit_columns(flat[:, k], par[:, k], axis, threshold, components, max_iter, cp)
            for name, value in res.items():
                out[name][..., k] = value
    return {name: value.reshape(value.shape[:-1] + (ny, nx)) for name, value in out.items()}


def _accepted_fits(flat: Any, axis: SpectralAxis, data_t: str, snr_cut: float, threshold: float | None,
                   max_iter: int) -> Any:
    """``(4, npix)`` float64 accepted fits (``A / peak``, ``mu``, ``|sigma|``, ``1 / peak``), NaN elsewhere."""
    import cupy as cp
    import numpy as np

    nz, npix = flat.shape
    fwhm = cp.empty(npix, dtype=cp.float32)
    ew = cp.empty(npix, dtype=cp.float32)
    noise = _noise(flat) if snr_cut > 0 else cp.zeros(npix)
    par = cp.full((4, npix), cp.nan)
    args = (
        flat, cp.asarray(axis.perm.astype(np.int32)), cp.asarray(axis.u), cp.asarray(axis.du),
        cp.asarray(axis.udu), cp.asarray(axis.dv), noise, np.int64(npix), np.int32(nz),
        np.int32(threshold is not None), np.float64(0.0 if threshold is None else threshold),
        np.float64(snr_cut), np.int32(axis.uniform), np.float64(axis.half), np.float64(axis.sig_min),
        np.float64(axis.span), np.int32(max_iter), np.int32(1), fwhm, ew, par,
    )  # fmt: skip
    _check_contiguous(args)
    _kernel(data_t)(((npix + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    step = check_columns(nz)
    for j0 in range(0, npix, step):  # the shared acceptance rule
        s = slice(j0, j0 + step)
        ok = significant(flat[:, s], par[:, s], axis, threshold, cp)
        par[:, s] = cp.where(ok, par[:, s], cp.nan)
    return par

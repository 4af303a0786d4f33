"""Smooth-and-clip mask of a channel block on the GPU (CuPy).

Same public functions and signatures as :mod:`cpu_fallback.smooth_clip`, whose docstring holds
the definitions. Arrays in and out are CuPy arrays on the current device. The spatial Gaussian
is a direct convolution (``cupyx.scipy.ndimage.convolve``, zero padding) where the CPU reference
uses an FFT convolution: the same sums, different rounding (float32, ~1e-7 of the kernel-weighted
magnitudes), hence the parity tolerance. The spectral window (``convolve1d``), the per-plane
median/MAD (the shared :mod:`kernel_common.robust` rows, as the ``noise`` kernels) and the
dilation are the reference's arithmetic. CuPy is imported inside the functions.
"""

from __future__ import annotations

from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.constants import MAD_TO_SIGMA
from kernel_common.robust import plane_median_mad
from kernel_common.smoothing import gaussian_kernel_2d, spectral_window

#: Agreement with the CPU reference (float32 smoothing, FFT vs direct convolution). The bool mask
#: compares exactly except for voxels within this tolerance of ``snr·σ`` (none in the self-test cube).
PARITY = Tolerance(rtol=1e-4, atol=1e-5)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("smooth_spatial", ("cube",), {"cov": (2.0, 0.6, 1.2)}),
    Case("smooth_spectral", ("cube",), {"channels": 5, "window": "hann"}),
    Case("smooth_clip_mask", ("cube",), {"covariances": (None, (1.5, 0.3, 1.0)), "widths": (1, 3),
                                         "snr": 3.0, "dilate": 1}),
)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any

_CHUNK_ELEMENTS = 1 << 24


def smooth_spatial(cube: _Array, *, cov: tuple[float, float, float]) -> _Array:
    """Each channel plane convolved with the normalised elliptical Gaussian of covariance ``cov``
    (blanks as 0, zero padding); float32 ``(nz, ny, nx)`` on the device."""
    import cupy as cp
    from cupyx.scipy import ndimage

    kernel = cp.asarray(gaussian_kernel_2d(cov), dtype=cp.float32)
    data = cp.where(cp.isfinite(cube), cube, cp.float32(0)).astype(cp.float32, copy=False)
    return ndimage.convolve(data, kernel[None], mode="constant", cval=0.0)


def smooth_spectral(cube: _Array, *, channels: int, window: str = "boxcar") -> _Array:
    """Each spectrum convolved with a ``channels``-wide ``boxcar`` or ``hann`` window (blanks as 0)."""
    import cupy as cp
    from cupyx.scipy import ndimage

    w = cp.asarray(spectral_window(int(channels), window), dtype=cp.float32)
    data = cp.where(cp.isfinite(cube), cube, cp.float32(0)).astype(cp.float32, copy=False)
    return ndimage.convolve1d(data, w, axis=0, mode="constant", cval=0.0)


def dilate_spectral(mask: _Array, *, channels: int) -> _Array:
    """``out[z] = mask[z−channels] | … | mask[z+channels]`` (bool, within the block)."""
    out = mask.copy()
    for d in range(1, int(channels) + 1):
        out[d:] |= mask[:-d]
        out[:-d] |= mask[d:]
    return out


def plane_sigma(cube: _Array) -> _Array:
    """Robust noise ``1.4826·MAD`` of the finite pixels of every channel plane (float64 ``(nz,)``)."""
    import cupy as cp

    _, mad = plane_median_mad(cube, cp, zero_as_blank=False, chunk_elements=_CHUNK_ELEMENTS)
    return MAD_TO_SIGMA * mad


def smooth_clip_mask(
    cube: _Array, *, covariances: tuple[tuple[float, float, float] | None, ...], widths: tuple[int, ...],
    snr: float, window: str = "boxcar", dilate: int = 0,
) -> tuple[_Array, _Array]:
    """Union over the kernels of ``S_k > snr·σ_k(z)``, dilated spectrally (see the CPU reference).

    Returns the ``(nz, ny, nx)`` bool mask and the ``(kernels, nz)`` float64 noise, on the device.
    """
    import cupy as cp

    finite = cp.isfinite(cube)
    mask = cp.zeros(cube.shape, dtype=cp.bool_)
    sigmas = []
    for cov in covariances:
        spatial = cube if cov is None else smooth_spatial(cube, cov=cov)
        for n in widths:
            s = spatial if int(n) == 1 else smooth_spectral(spatial, channels=int(n), window=window)
            if s is not cube:
                s = cp.where(finite, s, cp.float32(cp.nan))
            sig = plane_sigma(s)
            sigmas.append(sig)
            level = (float(snr) * sig).astype(cp.float32)
            mask |= s > level[:, None, None]
    mask &= finite
    if dilate:
        mask = dilate_spectral(mask, channels=dilate) & finite
    return mask, cp.stack(sigmas).astype(cp.float64)

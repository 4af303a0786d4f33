"""Smooth-and-clip mask of a channel block (SoFiA-2's S+C finder; NumPy/SciPy reference).

For every smoothing kernel ``k`` of the set (spatial Gaussian covariance or none × spectral window
or none), the block is smoothed (blanks count as 0, zero padding at the block's edges; blank voxels
are blank again after smoothing), the noise
of each smoothed channel plane is ``σ_k(z) = 1.4826·MAD`` of its finite pixels (the ``noise``
kernels' statistic: :func:`plane_sigma`), and a voxel is detected when
``S_k(z, y, x) > snr·σ_k(z)``. The mask is the union over the kernels, restricted to finite input
voxels and dilated along the spectral axis by ``dilate`` channels on each side.

Chunking: a channel plane is smoothed whole (spatial kernel) and the spectral window and the
dilation reach ``h = n//2`` and ``dilate`` channels, so the service feeds blocks of whole planes
with ``h + dilate`` halo channels on each side and keeps the interior (exact: the interior of a
block equals the same channels of a whole-cube run).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.signal

from kernel_common.constants import MAD_TO_SIGMA
from kernel_common.smoothing import gaussian_kernel_2d, spectral_window

#: Array type of this tree (``cupy.ndarray`` in the GPU twin).
_Array = np.ndarray


def smooth_spatial(cube: _Array, *, cov: tuple[float, float, float]) -> _Array:
    """Each channel plane convolved with the normalised elliptical Gaussian of covariance ``cov``.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` float32, data units; NaN/inf are blank and count as 0.
    cov : (cxx, cxy, cyy)
        Gaussian covariance in pixels² (:func:`kernel_common.smoothing.gaussian_kernel_2d`).

    Returns
    -------
    numpy.ndarray
        ``(nz, ny, nx)`` float32 ``S = K ∗ I`` with zero padding outside the plane (FFT convolution).
    """
    kernel = gaussian_kernel_2d(cov).astype(np.float32)
    data = np.where(np.isfinite(cube), cube, np.float32(0)).astype(np.float32, copy=False)
    out = scipy.signal.fftconvolve(data, kernel[None], mode="same", axes=(1, 2))
    return out.astype(np.float32, copy=False)


def smooth_spectral(cube: _Array, *, channels: int, window: str = "boxcar") -> _Array:
    """Each spectrum convolved with an ``channels``-wide ``boxcar`` or ``hann`` window (odd width).

    Blanks count as 0, zero padding beyond the block's first and last channels; float32 out.
    """
    w = spectral_window(int(channels), window).astype(np.float32)
    data = np.where(np.isfinite(cube), cube, np.float32(0)).astype(np.float32, copy=False)
    return scipy.ndimage.convolve1d(data, w, axis=0, mode="constant", cval=0.0)


def dilate_spectral(mask: _Array, *, channels: int) -> _Array:
    """``out[z] = mask[z−channels] | … | mask[z+channels]`` (bool, within the block)."""
    out = mask.copy()
    for d in range(1, int(channels) + 1):
        out[d:] |= mask[:-d]
        out[:-d] |= mask[d:]
    return out


def _median_of(a: np.ndarray) -> float:
    """Median of ``a`` (reordered in place): ``s[n//2]`` for odd ``n``, ``(s[n//2−1] + s[n//2]) / 2`` for even."""
    hi = a.size // 2
    a.partition(hi)
    if a.size % 2:
        return float(a[hi])
    return 0.5 * (float(a[:hi].max()) + float(a[hi]))


def plane_sigma(cube: _Array) -> _Array:
    """Robust noise ``1.4826·MAD`` of the finite pixels of every channel plane (float64 ``(nz,)``).

    ``MAD = median|v − median(v)|`` over the finite pixels (deviations in float64), NaN for a plane
    with fewer than 2: the numbers of :func:`kernel_common.robust.plane_median_mad` (the ``noise``
    kernels' rows) found by selection (``numpy.partition``, as the compiled CPU noise kernel) instead
    of a sort, the same order statistics.
    """
    sigma = np.full(cube.shape[0], np.nan)
    for z in range(cube.shape[0]):
        plane = cube[z]
        vals = plane[np.isfinite(plane)].astype(np.float64)
        if vals.size < 2:
            continue
        sigma[z] = MAD_TO_SIGMA * _median_of(np.abs(vals - _median_of(vals.copy())))
    return sigma


def smooth_clip_mask(
    cube: _Array, *, covariances: tuple[tuple[float, float, float] | None, ...], widths: tuple[int, ...],
    snr: float, window: str = "boxcar", dilate: int = 0,
) -> tuple[_Array, _Array]:
    """Union over the kernels ``covariances × widths`` of ``S_k > snr·σ_k(z)``, dilated spectrally.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` float32 block of whole channel planes, data units (NaN blank).
    covariances : tuple
        Spatial kernels: ``None`` (no spatial smoothing) or a pixel covariance ``(cxx, cxy, cyy)``.
    widths : tuple of int
        Spectral kernels in channels (odd; 1 = none).
    snr : float
        Clip level in units of each smoothed cube's per-channel noise.
    window : str
        ``boxcar`` or ``hann``.
    dilate : int
        Spectral dilation of the union, channels on each side (≥ 0).

    Returns
    -------
    mask : numpy.ndarray
        ``(nz, ny, nx)`` bool; false on blank input voxels.
    sigma : numpy.ndarray
        ``(len(covariances)·len(widths), nz)`` float64 noise per kernel (in ``covariances``-major
        order) and channel; NaN for a channel with fewer than 2 finite pixels (nothing detected there).
    """
    finite = np.isfinite(cube)
    mask = np.zeros(cube.shape, dtype=bool)
    sigmas = []
    for cov in covariances:
        spatial = cube if cov is None else smooth_spatial(cube, cov=cov)
        for n in widths:
            s = spatial if int(n) == 1 else smooth_spectral(spatial, channels=int(n), window=window)
            if s is not cube:  # blanks stay blank (and out of the noise) after smoothing
                s = np.where(finite, s, np.float32(np.nan))
            sig = plane_sigma(s)
            sigmas.append(sig)
            level = (float(snr) * sig).astype(np.float32)
            with np.errstate(invalid="ignore"):
                mask |= s > level[:, None, None]
    mask &= finite
    if dilate:
        mask = dilate_spectral(mask, channels=dilate) & finite
    return mask, np.asarray(sigmas, dtype=np.float64)

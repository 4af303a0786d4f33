"""2-D elliptical Gaussian fitting (``imfit``), NumPy reference: batched Levenberg–Marquardt.

Backs the ``imfit`` task of ``POST /api/visualization/js9/analysis``. The model of one plane is
a sum of ``K`` elliptical Gaussians plus an optional constant background ``B``::

    f(x, y) = Σ_k A_k · exp(−½ (u_k² / σa_k² + v_k² / σb_k²)) + B
    u_k =  (x − x0_k)·cos θ_k + (y − y0_k)·sin θ_k
    v_k = −(x − x0_k)·sin θ_k + (y − y0_k)·cos θ_k

with ``x`` the column and ``y`` the row index (0-based pixels of the array given), ``θ`` the
angle of the ``σa`` axis from the +x axis towards +y (radians). Parameters per component, in
this order: ``A, x0, y0, σa, σb, θ``; the background, when fitted, is the last parameter.
``FWHM = 2√(2 ln 2)·σ``.

Fit: unweighted least squares over the finite, in-mask pixels (as CASA ``imfit`` does without a
noise estimate), Levenberg–Marquardt with the analytic Jacobian and Marquardt's diagonal
damping, vectorised over pixels and batched over planes: ``B`` independent problems advance
together (normal equations ``(JᵀJ + λ·diag JᵀJ)·δ = Jᵀr`` solved as a ``(B, P, P)`` stack),
each with its own ``λ``, acceptance and convergence. The normal equations are accumulated over
pixel chunks, so memory stays bounded for a whole 4096² plane. 1-σ uncertainties are
``√diag((JᵀJ)⁻¹ · χ²/(N − P))`` at the solution.

Chunking: none across problems (a fit needs all its pixels); pixel chunks are internal.
"""

from __future__ import annotations

import numpy as np

from kernel_common import gauss2d
from kernel_common.constants import FWHM_PER_SIGMA as FWHM_PER_SIGMA
from kernel_common.gauss2d import N_COMPONENT_PARAMS as N_COMPONENT_PARAMS

#: Array type of this tree (``gpu_kernels.fit2d`` names ``cupy.ndarray`` the same way).
_Array = np.ndarray



def estimate_gaussians(image: _Array, mask: _Array | None = None, *, n_components: int = 1,
                       background: bool = False, window: int = 32) -> _Array:
    """Initial parameters for :func:`fit_gaussians` from the plane itself.

    Component ``k`` sits on the highest remaining pixel; its size and orientation come from the
    intensity-weighted second moments of the pixels above half its peak within ``window``
    pixels (for a Gaussian those moments are ``0.307·σ²`` per axis); its neighbourhood (two
    FWHM) is then excluded before the next peak is taken. The background starts at the median.

    Parameters
    ----------
    image : numpy.ndarray
        ``(y, x)`` float32/float64 plane, data units; NaN/±inf are blank.
    mask : numpy.ndarray, optional
        ``(y, x)`` bool pixels to use.
    n_components : int
        Number of Gaussian components ``K``.
    background : bool
        Append a background parameter.
    window : int
        Half size (pixels) of the box in which a component's moments are taken.

    Returns
    -------
    numpy.ndarray
        ``(6·K [+1],)`` float64 parameters (see module docstring).

    Raises
    ------
    ValueError
        If the plane has fewer usable pixels than parameters or no positive peak is left.
    """
    return gauss2d.estimate(np, image, mask, n_components=n_components, background=background, window=window)


def gaussian_model(params: _Array, *, shape: tuple[int, int], n_components: int, background: bool) -> _Array:
    """Evaluate the model of every problem on a ``shape`` pixel grid.

    Parameters
    ----------
    params : numpy.ndarray
        ``(B, 6·K [+1])`` (or ``(P,)``) parameters.
    shape : tuple of int
        ``(ny, nx)`` of the planes.

    Returns
    -------
    numpy.ndarray
        ``(B, ny, nx)`` float64 model planes, data units.
    """
    return gauss2d.model(np, params, shape=shape, n_components=n_components, background=background)


def fit_gaussians(images: _Array, p0: _Array, mask: _Array | None = None, *, n_components: int = 1,
                  background: bool = False, max_iter: int = 200, tol: float = 1e-10) -> dict[str, _Array]:
    """Least-squares fit of ``K`` elliptical Gaussians (+ background) to each of ``B`` planes.

    Parameters
    ----------
    images : numpy.ndarray
        ``(B, ny, nx)`` (or ``(ny, nx)``) float32/float64 planes, data units; NaN/±inf are ignored.
    p0 : numpy.ndarray
        ``(B, P)`` (or ``(P,)``) initial parameters, ``P = 6·K + background``.
    mask : numpy.ndarray, optional
        ``(ny, nx)`` or ``(B, ny, nx)`` bool pixels to fit.
    n_components : int
        ``K``.
    background : bool
        Fit a constant background (last parameter).
    max_iter : int
        Iteration limit per problem.
    tol : float
        Convergence: an accepted step lowering χ² by less than ``tol·χ²``, or a relative step below ``tol``.

    Returns
    -------
    dict
        ``params`` ``(B, P)`` (normalised: ``σa ≥ σb > 0``, ``θ`` of the major axis in ``[0, π)``),
        ``errors`` ``(B, P)`` 1-σ, ``chi2`` ``(B,)`` (data units²), ``npix`` ``(B,)``,
        ``iterations`` ``(B,)`` and ``converged`` ``(B,)`` bool.
    """
    with np.errstate(all="ignore"):
        return gauss2d.fit(np, images, p0, mask, n_components=n_components, background=background,
                    max_iter=max_iter, tol=tol)

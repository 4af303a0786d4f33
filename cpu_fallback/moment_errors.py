"""Propagated 1σ uncertainties of moment maps 0, 1 and 2 (CPU reference implementation).

Formulas of bettermoments (R. Teague 2019, "Robust Line Centroids: bettermoments",
RNAAS 3, 173; ``bettermoments.methods.collapse_zeroth/first/second``): first-order error
propagation of independent Gaussian noise ``σ_i`` (data units) in channel ``i`` through the
moment sums over the kept voxels ``I_i`` of one spectrum, with ``Δv_i = |width_i|`` and
``M0 = Σ I_i Δv_i``, ``M1 = Σ I_i v_i Δv_i / M0``, ``d_i = v_i − M1``:

* ``σ_M0 = √(Σ (Δv_i σ_i)²)`` -- for one rms over N kept channels of width Δv, ``Δv·rms·√N``.
* ``σ_M1 = √(Σ (d_i Δv_i σ_i)²) / |M0|``.
* Variance ``V = Σ I_i d_i² Δv_i / M0`` (order 2 of the API reference convention):
  ``∂V/∂I_i = (d_i² − V) Δv_i / M0`` (the term through ``M1`` vanishes because
  ``Σ I_i d_i Δv_i = 0``), so ``σ_V = √(Σ ((d_i² − V) Δv_i σ_i)²) / |M0|``.
* Dispersion ``W = √V`` (order 2 of CASA, bettermoments' ``M2``): ``σ_W = σ_V / (2W)`` --
  bettermoments' ``√(Σ ((d_i² − W²) Δv_i σ_i)²) / (2 M0 W)``.

Kept voxels are those the moment kernels keep: finite, ``I >= threshold`` when given, inside
``include`` / outside ``exclude`` (CASA pixel ranges, end points kept). NaN where the moment
itself is undefined: no kept voxel (all three), ``M0 = 0`` (σ_M1, σ_M2), ``V <= 0`` (σ_W).
Sums in float64, results float32. The mask is treated as fixed (as bettermoments does): the
formulas ignore that noise moves voxels across a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernel_common.moment_sigma import sigma_maps

#: Array type of this tree (the GPU tree uses ``cupy.ndarray``).
_Array = np.ndarray


def moment_sigma_maps(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    noise: _Array | float,
    *,
    threshold: float | None = None,
    include: float | Sequence[float] | None = None,
    exclude: float | Sequence[float] | None = None,
    dispersion: bool = False,
) -> dict[int, _Array]:
    """1σ maps of moments 0, 1 and 2 of a ``(spectral, y, x)`` cube (module docstring).

    Parameters
    ----------
    cube : numpy.ndarray
        ``(nz, ny, nx)`` float32 (or float64) intensities, data units; NaN/inf are blank.
    coords : array_like
        ``(nz,)`` spectral coordinate of every channel (e.g. km/s).
    widths : array_like
        ``(nz,)`` channel widths, same units (only ``|Δv|`` is used).
    noise : array_like or float
        Noise ``σ_i`` per channel, ``(nz,)`` or one value, data units, finite and ``>= 0``.
    threshold : float, optional
        Keep only voxels with ``I >= threshold`` (API-reference mask).
    include, exclude : float, sequence of float or None, optional
        CASA ``includepix`` / ``excludepix`` (at most one).
    dispersion : bool, optional
        If true order 2 is the dispersion ``√V`` (CASA), else the variance ``V`` (reference).

    Returns
    -------
    dict of int to numpy.ndarray
        ``{0: σ_M0, 1: σ_M1, 2: σ_M2}``, ``(ny, nx)`` float32; units: data × coordinate,
        coordinate, coordinate² (variance) or coordinate (dispersion).

    Raises
    ------
    ValueError
        Bad shapes or dtype, non-finite coordinates/widths, negative or non-finite noise,
        both pixel ranges.
    """
    return sigma_maps(np, cube, coords, widths, noise, threshold=threshold, include=include, exclude=exclude,
                      dispersion=dispersion)

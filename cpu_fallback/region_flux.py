"""Per-channel sums over a region (``specflux``), NumPy reference.

Backs the ``specflux`` task of ``POST /api/visualization/js9/analysis``. The service cuts the
region's bounding box out of the cube and passes the region as a spatial ``mask``; the
service turns the sums into flux densities (``S_c = Σ_c / A_beam`` for Jy/beam data, with
``A_beam = π·θ_maj·θ_min / (4 ln 2 · |Δx·Δy|)`` pixels) and the spectral integral.

Chunking: every channel is independent, so channel blocks (or spatial blocks, whose sums and
counts add) can be processed separately and concatenated (or added) exactly.
"""

from __future__ import annotations

import numpy as np

#: Array type of this tree (``gpu_kernels.region_flux`` names ``cupy.ndarray`` the same way).
_Array = np.ndarray


def channel_sums(cube: _Array, mask: _Array | None = None) -> tuple[_Array, _Array]:
    """Sum and count of the finite, in-mask pixels of every channel.

    Parameters
    ----------
    cube : numpy.ndarray
        ``(spectral, y, x)`` float32, data units (e.g. Jy/beam). NaN/±inf are blank.
    mask : numpy.ndarray, optional
        ``(y, x)`` bool region mask (``None``: every pixel).

    Returns
    -------
    sums : numpy.ndarray
        ``(nz,)`` float64, ``Σ_c = Σ_{(y,x) ∈ region, finite} cube[c, y, x]`` (data units · pixel).
    counts : numpy.ndarray
        ``(nz,)`` int64 number of pixels summed per channel.
    """
    a = np.asarray(cube)
    if a.ndim != 3:
        raise ValueError(f"channel_sums expects a (spectral, y, x) cube, got shape {a.shape}")
    nz, ny, nx = a.shape
    flat = a.reshape(nz, ny * nx)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != (ny, nx):
            raise ValueError(f"mask shape {m.shape} does not match cube planes {(ny, nx)}")
        flat = flat[:, m.reshape(-1)]
    finite = np.isfinite(flat)
    sums = np.where(finite, flat, np.float32(0.0)).sum(axis=1, dtype=np.float64)
    counts = finite.sum(axis=1, dtype=np.int64)
    return sums, counts

"""Per-channel robust noise over a region: MAD and σ = 1.4826·MAD."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.compute.backend import to_host
from app.compute.chunking import channel_blocks
from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_blocks
from app.services.cube_reads import clamp_range, require_cube
from app.services.sessions import Dataset
from kernel_common.constants import MAD_TO_SIGMA  # σ = MAD / Φ⁻¹(3/4)


def channel_noise(ctx: JobContext, dataset: Dataset, *, x0, x1, y0, y1, z0, z1) -> dict[str, Any]:
    """MAD and σ per channel over the inclusive, clamped region.

    ``mad[z] = median(|v − median(v)|)`` over the finite pixels of plane ``z`` in the region,
    ``sigma[z] = 1.4826·mad[z]``; channels with fewer than 2 finite pixels give ``null``.
    ``blank_fraction`` is the fraction of non-finite voxels in the whole selection.
    """
    source = require_cube(dataset)
    nz, ny, nx = source.shape
    xa, xb = clamp_range(x0, x1, nx, "x")
    ya, yb = clamp_range(y0, y1, ny, "y")
    za, zb = clamp_range(z0, z1, nz, "channel")
    kernels = ctx.compiled("noise") or ctx.kernels("noise")  # CPU: selection, threads over channels
    on_gpu = ctx.on_gpu
    plane_bytes = 4 * (xb - xa + 1) * (yb - ya + 1)

    def compute(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        # Per-channel statistics: each channel block holds whole planes of the region, so a block's
        # medians and MADs are final; only the blank count is summed over blocks.
        blanks = int(np.count_nonzero(~np.isfinite(block)))
        if on_gpu:
            import cupy  # noqa: PLC0415

            block = cupy.asarray(block)
        median, mad = kernels.channel_mad(block)
        return to_host(median), to_host(mad), blanks  # sync

    blocks = channel_blocks(zb - za + 1, 3 * plane_bytes, ctx.chunk_bytes)
    reads = [(slice(za + zs.start, za + zs.stop), slice(ya, yb + 1), slice(xa, xb + 1)) for zs in blocks]
    parts = map_over_blocks(ctx, source, reads, compute)
    medians = [p[0] for p in parts]
    mads = [p[1] for p in parts]
    blanks = sum(p[2] for p in parts)
    mad = np.concatenate(mads)
    count = (zb - za + 1) * (xb - xa + 1) * (yb - ya + 1)
    return {
        "channel_start": za, "channel_end": zb, "num_channels": zb - za + 1,
        "mad": mad.tolist(), "sigma": (MAD_TO_SIGMA * mad).tolist(), "median": np.concatenate(medians).tolist(),
        "region": {"x0": xa, "x1": xb, "y0": ya, "y1": yb},
        "blank_fraction": blanks / count if count else 0.0,
        "computed_on": "gpu" if ctx.on_gpu else "cpu",
        "kernel": "cupy" if ctx.on_gpu else "numpy" if kernels.__name__ == "cpu_fallback.noise" else "select",
    }

"""Per-channel robust noise inside DS9/CRTF regions (``POST /v1/cube/noise`` with ``regions``).

For region ``r`` and channel ``z``, over the finite pixels ``v`` whose centre lies in the region
(the masks of :func:`app.services.region_spectrum.parse_regions`):
``median_z = median(v)``, ``mad_z = median(|v − median_z|)``, ``sigma_z = 1.4826·mad_z`` (data
unit; null with fewer than 2 finite pixels), ``count_z`` the finite pixels and ``blank_fraction``
the non-finite share of the region's voxels over the channel range. The answer's top-level
``mad``/``sigma``/``median`` are those of the *union* of the regions (every pixel once) and
``region`` is the union's bounding box.

The union bounding box is read once per channel block; each region's pixels are gathered into a
``(k, 1, n)`` block and handed to the ``noise`` kernel (``channel_mad``), so the numbers are those
of the box operation on the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from app.compute.backend import to_host
from app.compute.chunking import channel_blocks
from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_blocks
from app.services.cube_reads import require_cube
from app.services.region_input import describe, mask_in_box, union_box
from app.services.region_spectrum import RegionMask
from app.services.sessions import Dataset
from kernel_common.constants import MAD_TO_SIGMA


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def region_noise(ctx: JobContext, dataset: Dataset, regions: list[RegionMask], *, z0: int, z1: int) -> dict[str, Any]:
    """Median, MAD, σ and finite count per channel ``z0..z1`` (inclusive) of every region and of their union."""
    source = require_cube(dataset)
    ys, xs = union_box(regions)
    boxes = [mask_in_box(r, ys, xs) for r in regions]
    union = np.logical_or.reduce(boxes)
    selections = [np.flatnonzero(m.reshape(-1)) for m in (*boxes, union)]
    kernels = ctx.compiled("noise") or ctx.kernels("noise")
    on_gpu = ctx.on_gpu
    pixels = sum(s.size for s in selections)

    def compute(block: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        # Whole planes of the box per block: the per-channel medians of a block are final.
        flat = block.reshape(block.shape[0], -1)
        out = []
        for sel in selections:
            values = flat[:, sel]
            count = np.count_nonzero(np.isfinite(values), axis=1)
            cube = values.reshape(values.shape[0], 1, sel.size)
            if on_gpu:
                import cupy  # noqa: PLC0415

                cube = cupy.asarray(cube)
            median, mad = kernels.channel_mad(cube)
            out.append((to_host(median), to_host(mad), count))  # sync
        return out

    plane_bytes = 4 * (ys.stop - ys.start) * (xs.stop - xs.start) + 12 * pixels
    blocks = channel_blocks(z1 - z0 + 1, plane_bytes, ctx.chunk_bytes)
    reads = [(slice(z0 + zs.start, z0 + zs.stop), ys, xs) for zs in blocks]
    parts = map_over_blocks(ctx, source, reads, compute)
    nchan = z1 - z0 + 1
    stats = []
    for j in range(len(selections)):
        median = np.concatenate([p[j][0] for p in parts])
        mad = np.concatenate([p[j][1] for p in parts])
        count = np.concatenate([p[j][2] for p in parts])
        total = nchan * selections[j].size
        stats.append({"median": _floats(median), "mad": _floats(mad), "sigma": _floats(MAD_TO_SIGMA * mad),
                      "count": [int(c) for c in count],
                      "blank_fraction": float(1.0 - count.sum() / total) if total else 0.0})
    per_region = [{**describe(i, r), **stats[i]} for i, r in enumerate(regions)]
    whole = stats[-1]
    return {
        "channel_start": z0, "channel_end": z1, "num_channels": nchan,
        "mad": whole["mad"], "sigma": whole["sigma"], "median": whole["median"],
        "region": {"x0": xs.start, "x1": xs.stop - 1, "y0": ys.start, "y1": ys.stop - 1},
        "blank_fraction": whole["blank_fraction"], "regions": per_region,
        "computed_on": "gpu" if on_gpu else "cpu",
        "kernel": "cupy" if on_gpu else "numpy" if kernels.__name__ == "cpu_fallback.noise" else "select",
    }

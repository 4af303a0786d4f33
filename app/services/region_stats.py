"""CASA ``imstat`` statistics of a cube inside DS9/CRTF regions (``POST /v1/cube/region_stats``).

For region ``r`` the statistics run over the 3-D prism "pixel centre inside the region" ×
channels ``c0..c1``, blanks (non-finite) excluded, with the definitions of
:mod:`cpu_fallback.stats` (CASA ``imstat``: ``npts, sum, sumsq, mean, sigma`` (sample standard
deviation), ``rms, min, max, median, medabsdevmed, q1, q3, quartile``). ``minpos``/``maxpos`` are
the first extreme in ``(channel, y, x)`` C order, reported 0-based as ``[x, y, channel]`` (CASA's
axis order, without a Stokes axis).

The union bounding box of the regions is read once per channel block; for each region the ``stats``
kernels reduce its box and mask to a partial (exact sums and sorted runs), partials of the blocks
are combined and finalised, so a chunked run gives the numbers of one whole pass.
"""

from __future__ import annotations

from functools import reduce
from typing import Any

import numpy as np

from app.compute.chunking import channel_blocks
from app.compute.dispatch import JobContext
from app.services.budget import check_budget
from app.services.cube_reads import require_cube
from app.services.region_input import describe, union_box
from app.services.region_spectrum import RegionMask
from app.services.sessions import Dataset

#: Working bytes per selected voxel: the float32 read, its sorted copy and float64 sums (as JS9 imstat).
BYTES_PER_VOXEL = 16.0
#: The statistics copied into each region's answer.
KEYS = ("npts", "sum", "sumsq", "mean", "sigma", "rms", "min", "max", "median", "medabsdevmed", "q1", "q3",
        "quartile")


def check_memory(regions: list[RegionMask], c0: int, c1: int) -> None:
    """Refuse (``valid: false``) a request whose sorted runs would pass the per-request memory budget."""
    voxels = (c1 - c0 + 1) * sum(r.num_pixels for r in regions)
    check_budget(BYTES_PER_VOXEL * voxels, f"region statistics over {voxels} voxels")


def _position(pos: tuple[int, int, int]) -> list[int] | None:
    """``(z, y, x)`` → ``[x, y, z]``; ``None`` for a region without finite voxels."""
    return None if pos[0] < 0 else [int(pos[2]), int(pos[1]), int(pos[0])]


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def region_statistics(ctx: JobContext, dataset: Dataset, regions: list[RegionMask], *, c0: int,
                      c1: int) -> dict[str, Any]:
    """CASA ``imstat`` keys of every region over channels ``c0..c1`` (inclusive; module docstring)."""
    source = require_cube(dataset)
    kern = ctx.kernels("stats")
    ys, xs = union_box(regions)
    plane_bytes = 4 * (ys.stop - ys.start) * (xs.stop - xs.start)
    blocks = channel_blocks(c1 - c0 + 1, 2 * plane_bytes, ctx.chunk_bytes)
    masks: list[Any] = [r.mask for r in regions]
    xp = np
    if ctx.on_gpu:
        import cupy  # noqa: PLC0415

        xp = cupy
        masks = [cupy.asarray(m) for m in masks]
    parts: list[list[dict[str, Any]]] = [[] for _ in regions]
    for i, zs in enumerate(blocks):
        ctx.check_cancelled()
        z = c0 + zs.start
        block = xp.asarray(source.read(z=slice(z, c0 + zs.stop), y=ys, x=xs))
        for j, r in enumerate(regions):
            sub = xp.ascontiguousarray(block[:, r.ys.start - ys.start:r.ys.stop - ys.start,
                                             r.xs.start - xs.start:r.xs.stop - xs.start])
            parts[j].append(kern.stats_partial(sub, masks[j], origin=(z, r.ys.start, r.xs.start)))
        ctx.progress((i + 1) / len(blocks))
    out = []
    for j, r in enumerate(regions):
        stats = kern.stats_finalize(reduce(kern.stats_combine, parts[j]))
        entry: dict[str, Any] = describe(j, r)
        entry.update({key: _number(stats[key]) for key in KEYS})
        entry["npts"] = int(stats["npts"])
        entry["minpos"], entry["maxpos"] = _position(stats["minpos"]), _position(stats["maxpos"])
        out.append(entry)
    return {
        "channel_start": c0, "channel_end": c1, "num_channels": c1 - c0 + 1,
        "bunit": dataset.info.get("bunit", ""), "regions": out, "computed_on": "gpu" if ctx.on_gpu else "cpu",
    }

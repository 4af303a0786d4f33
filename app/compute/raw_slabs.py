"""Run a compiled per-spectrum kernel over the stored FITS data in y-slabs (CPU, no conversion).

The compiled CPU kernels (:mod:`cpu_fallback.compiled`) read the memmap as stored (byte order,
BSCALE/BZERO/BLANK applied inside the kernel), so a slab is a *view* of the file
(:meth:`~app.io.fits_reader.CubeSource.read_raw`), not a float32 copy, and costs no memory. The
slabs only give progress and cancellation points; each holds at least :data:`RAW_SLAB_BYTES` of
stored data (tens of milliseconds of kernel time; a 512x512x256 float32 cube is one kernel call,
with no per-slab parallel-region start), or the chunk budget if larger, and at least a few rows
per thread. On the Dask lane each slab is one task
(chunk-budget sized): the worker runs the same compiled kernel on its own view of the file
(bit-identical maps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from app.compute.chunking import y_slabs
from app.compute.dask_lane import TileSource
from app.compute.dispatch import JobContext
from app.io.fits_reader import CubeSource, RawBlock

RawCompute = Callable[[RawBlock], dict[Any, np.ndarray]]

#: Least stored bytes per slab: views need no memory, so slabs are sized for cancellation latency.
RAW_SLAB_BYTES = 256 * 1024 * 1024


def map_over_raw_slabs(
    ctx: JobContext, source: CubeSource, z: slice, compute: RawCompute, *, rows: slice | None = None
) -> dict[Any, np.ndarray]:
    """Apply ``compute(raw_block) -> {name: (rows, nx) map}`` to every y-slab and assemble full maps.

    Parameters
    ----------
    ctx
        The job context (chunk budget, progress, cancellation).
    source
        The cube's block reader.
    z
        Channel range (a slice with step 1).
    compute
        Compiled kernel call on a :class:`~app.io.fits_reader.RawBlock` (a view of the file).
    rows
        Restrict to these rows (step 1); the maps then have ``rows`` rows.
    """
    nz = len(range(*z.indices(source.shape[0])))
    _, ny_full, nx = source.shape
    y0, y1, _ = (rows or slice(None)).indices(ny_full)
    ny = y1 - y0
    itemsize = float(source.raw.dtype.itemsize)
    tile = TileSource.of(source) if getattr(ctx, "cluster", None) is not None else None
    # locally a slab is a free view (big slabs: fewer parallel-region starts); a Dask tile is one
    # task whose size follows the chunk budget (workers have their own memory limits)
    budget = max(ctx.chunk_bytes, RAW_SLAB_BYTES if tile is None else 0, int(16 * nz * nx * itemsize))
    slabs = y_slabs((nz, ny, nx), budget, bytes_per_voxel=itemsize)
    out: dict[Any, np.ndarray] = {}
    if tile is not None:  # the Dask lane: each worker runs the compiled kernel on its view of the file
        reads = [(z, slice(y0 + ys.start, y0 + ys.stop), slice(None)) for ys in slabs]
        for ys, maps in zip(slabs, ctx.cluster.map_tiles(ctx, tile, reads, compute, raw=True), strict=True):
            for key, part in maps.items():
                if key not in out:
                    out[key] = np.empty((ny, nx), dtype=part.dtype)
                out[key][ys] = part
        return out
    for i, ys in enumerate(slabs):
        ctx.check_cancelled()
        block = source.read_raw(z=z, y=slice(y0 + ys.start, y0 + ys.stop))
        for key, part in compute(block).items():
            if key not in out:
                out[key] = np.empty((ny, nx), dtype=part.dtype)
            out[key][ys] = part
        ctx.progress((i + 1) / len(slabs))
    return out

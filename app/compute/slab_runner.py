"""Run a per-spectrum kernel over a cube in y-slabs (CPU) or on the device-resident cube (GPU).

Per-spectrum operations (moments, line width) keep the spectral axis whole, so a
y-slab of the cube is an independent piece of work: the CPU path reads one slab at a
time from the memmap (bounded memory, cancellation and progress between slabs); the
GPU path uses the resident cube when it fits the device budget and otherwise
streams the same slabs through the device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from app.compute.backend import to_host
from app.compute.chunking import channel_blocks, y_slabs
from app.compute.dask_lane import MultiTileSource, TileSource
from app.compute.dask_worker import to_host_tree
from app.compute.dispatch import JobContext
from app.io.fits_reader import CubeSource

Compute = Callable[[Any], dict[Any, Any]]
T = TypeVar("T")


def upload_cube(source: CubeSource, chunk_bytes: int) -> Any:
    """Copy a whole cube to the current CUDA device, one channel block at a time."""
    import cupy  # noqa: PLC0415

    nz, ny, nx = source.shape
    cube = cupy.empty((nz, ny, nx), dtype=cupy.float32)
    for zs in channel_blocks(nz, 4 * ny * nx, chunk_bytes):
        cube[zs] = cupy.asarray(source.read(z=zs))
    return cube


def map_over_slabs(
    ctx: JobContext,
    source: CubeSource,
    z: slice,
    compute: Compute,
    *,
    bytes_per_voxel: float = 16.0,
    resident: Callable[[], Any | None] | None = None,
    rows: slice | None = None,
) -> dict[Any, np.ndarray]:
    """Apply ``compute(block) -> {name: (rows, nx) map}`` to every y-slab and assemble full maps.

    Parameters
    ----------
    ctx
        The job context (device, chunk budget, progress, cancellation).
    source
        The cube's block reader.
    z
        Channel range (a slice with step 1).
    compute
        Kernel call on a ``(nz, rows, nx)`` float32 block (NumPy or CuPy) returning 2-D maps.
    bytes_per_voxel
        Input plus working memory per voxel, for sizing the slabs.
    resident
        On GPU: returns the device-resident whole cube, or ``None`` to stream.
    rows
        Restrict to these rows (step 1); the maps then have ``rows`` rows.
    """
    nz = len(range(*z.indices(source.shape[0])))
    _, ny_full, nx = source.shape
    y0, y1, _ = (rows or slice(None)).indices(ny_full)
    ny = y1 - y0
    if ctx.on_gpu and resident is not None:
        cube = resident()
        if cube is not None:
            ctx.progress(0.0)
            maps = {k: to_host(v) for k, v in compute(cube[z, y0:y1]).items()}  # sync
            ctx.progress(1.0)
            return maps
    slabs = y_slabs((nz, ny, nx), ctx.chunk_bytes, bytes_per_voxel=bytes_per_voxel)
    out: dict[Any, np.ndarray] = {}
    tile = _tile_source(ctx, source)
    if tile is not None:  # the distributed lane: the same slabs as Dask tasks, read by the workers
        reads = [(z, slice(y0 + ys.start, y0 + ys.stop), slice(None)) for ys in slabs]
        for ys, maps in zip(slabs, ctx.cluster.map_tiles(ctx, tile, reads, compute), strict=True):
            for key, host in maps.items():
                if key not in out:
                    out[key] = np.empty((ny, nx) + host.shape[2:], dtype=host.dtype)
                out[key][ys] = host
        return out
    for i, ys in enumerate(slabs):
        ctx.check_cancelled()
        block = source.read(z=z, y=slice(y0 + ys.start, y0 + ys.stop))
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            block = cupy.asarray(block)
        for key, part in compute(block).items():
            host = to_host(part)  # sync
            if key not in out:
                out[key] = np.empty((ny, nx) + host.shape[2:], dtype=host.dtype)
            out[key][ys] = host
        ctx.progress((i + 1) / len(slabs))
    return out


def map_over_blocks(
    ctx: JobContext,
    source: CubeSource,
    reads: list[tuple[slice, slice, slice]],
    compute: Callable[[np.ndarray], T],
    *,
    span: tuple[float, float] = (0.0, 1.0),
) -> list[T]:
    """``[compute(source.read(z, y, x)) for (z, y, x) in reads]`` with progress and cancellation.

    ``compute`` gets the host (NumPy) block and must return host values. With the distributed
    lane each block is one Dask task that reads the block from the file on the worker. Progress
    goes from ``span[0]`` to ``span[1]``.
    """
    tile = _tile_source(ctx, source)
    if tile is not None:
        return ctx.cluster.map_tiles(ctx, tile, reads, compute, span=span)
    results: list[T] = []
    lo, hi = span
    for i, (z, y, x) in enumerate(reads):
        ctx.check_cancelled()
        results.append(compute(source.read(z=z, y=y, x=x)))
        ctx.progress(lo + (hi - lo) * (i + 1) / len(reads))
    return results


def stream_over_slabs(
    ctx: JobContext,
    sources: CubeSource | Sequence[CubeSource],
    z: slice,
    compute: Callable[[Any], T],
    *,
    bytes_per_voxel: float,
) -> Iterator[tuple[slice, T]]:
    """Yield ``(ys, compute(block))`` for every y-slab ``ys`` of the channel range ``z`` (host values).

    For cube-valued results (baseline, stacked cubes) that the caller writes slab by slab: locally
    the slabs come in order, one at a time; on the Dask lane in completion order, with at most two
    tiles per worker thread submitted and not yet consumed (so the server holds a bounded number of
    output slabs). ``sources`` may be several cubes of one shape: ``compute`` then gets the list of
    their blocks. On a GPU job the blocks are CuPy arrays; the results are copied to the host.
    """
    many = not isinstance(sources, CubeSource)
    cubes = list(sources) if many else [sources]
    nz = len(range(*z.indices(cubes[0].shape[0])))
    _, ny, nx = cubes[0].shape
    slabs = y_slabs((nz, ny, nx), ctx.chunk_bytes, bytes_per_voxel=bytes_per_voxel)
    tiles = [_tile_source(ctx, c) for c in cubes]
    if all(t is not None for t in tiles):
        tile = MultiTileSource(tuple(tiles)) if many else tiles[0]
        threads = max(1, int(ctx.cluster.report()["threads"]))
        reads = [(z, ys, slice(None)) for ys in slabs]
        for index, value in ctx.cluster.iter_tiles(ctx, tile, reads, compute, window=2 * threads):
            yield slabs[index], value
        return
    for i, ys in enumerate(slabs):
        ctx.check_cancelled()
        blocks = [c.read(z=z, y=ys) for c in cubes]
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            blocks = [cupy.asarray(b) for b in blocks]
        value = to_host_tree(compute(blocks if many else blocks[0]))  # sync
        ctx.progress((i + 1) / len(slabs))
        yield ys, value


def _tile_source(ctx: JobContext, source: CubeSource) -> TileSource | None:
    """Where the job's tiles go: a :class:`TileSource` for the Dask lane, or ``None`` to run here."""
    if getattr(ctx, "cluster", None) is None or ctx.on_gpu or not isinstance(source, CubeSource):
        return None  # a masked reader (noise-aware mask) blanks its slabs here
    return TileSource.of(source)

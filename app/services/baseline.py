"""Baseline (continuum) subtraction: per-pixel polynomial or median over line-free channels.

The fit is solved for all pixels at once (batched least squares, kernel ``baseline``); the
subtracted cube is written slab by slab into ``VISIVO_OUTPUT_DIR`` (atomically) with the source
WCS (spectral axis cropped to the channel range) and HISTORY provenance, then registered as a
new dataset of the session. On the CPU with numba the slabs are read as stored and go through the
compiled kernel :mod:`cpu_fallback.compiled.baseline` (same outcomes, residuals to float32 rounding);
``VISIVO_COMPILED=0`` gives the NumPy oracle. On the Dask lane each y-slab is a task: the worker
reads its slab from the file and returns the subtracted slab, which the server writes into the
output file as it arrives (workers never write; the RMS partials are combined in slab order).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from app.compute.backend import to_host
from app.compute.chunking import y_slabs
from app.compute.dispatch import JobContext
from app.compute.slab_runner import stream_over_slabs
from app.errors import InvalidRequest
from app.io.fits_writer import CubeWriter, unique_output_path
from app.services.budget import check_rows
from app.services.channel_ranges import format_ranges
from app.services.cube_reads import clamp_range, require_cube
from app.services.sessions import Dataset
from kernel_common.baseline_model import outcome_counts


@dataclass(frozen=True)
class BaselineParams:
    channel_start: int
    channel_end: int
    order: int
    method: str
    line_free: tuple[int, ...]  # absolute channel indices, sorted, inside the range


def parse_line_free(spec: list, start: int, end: int) -> tuple[int, ...]:
    """Line-free channels from a flat list ``[5, 6, 7]`` or inclusive ranges ``[[5, 15], [80, 120]]``."""
    if not spec:
        raise InvalidRequest("line_free_channels is required (flat list or [[lo, hi], ...] ranges).")
    chans: set[int] = set()
    for item in spec:
        if isinstance(item, (list, tuple)):
            if len(item) != 2 or int(item[0]) > int(item[1]):
                raise InvalidRequest(f"Invalid line-free range {item}: use [lo, hi] with lo <= hi.")
            chans.update(range(int(item[0]), int(item[1]) + 1))
        else:
            chans.add(int(item))
    outside = sorted(c for c in chans if c < start or c > end)
    if outside:
        raise InvalidRequest(f"Line-free channels outside the channel range {start}..{end}: {outside[:10]}")
    return tuple(sorted(chans))


def resolve(dataset: Dataset, *, channel_start: int | None, channel_end: int | None, poly_order: int, method: str,
            line_free_channels: list) -> BaselineParams:
    source = require_cube(dataset)
    nz = source.shape[0]
    if dataset.kind != "cube":
        raise InvalidRequest("Baseline subtraction needs a spectral cube.")
    if method not in ("polynomial", "median"):
        raise InvalidRequest("method must be 'polynomial' or 'median'.")
    if not 0 <= poly_order <= 10:
        raise InvalidRequest("poly_order must be between 0 and 10.")
    if channel_start == 0 and channel_end == 0 or channel_start is None and channel_end is None:
        c0, c1 = 0, nz - 1
    else:
        if channel_start is not None and channel_end is not None and channel_start > channel_end:
            raise InvalidRequest("Invalid channel range.")
        c0, c1 = clamp_range(channel_start, channel_end, nz, "channel")
    free = parse_line_free(line_free_channels, c0, c1)
    need = 2 if method == "median" else poly_order + 2
    if len(free) < need:
        raise InvalidRequest(f"Too few line-free channels ({len(free)}) for a {method} baseline"
                             f"{'' if method == 'median' else f' of order {poly_order}'}: need at least {need}.")
    return BaselineParams(c0, c1, poly_order, method, free)


def _header(dataset: Dataset, params: BaselineParams) -> fits.Header:
    info = dataset.handle.wcs_info
    wcs = info.wcs
    roles = info.roles
    keep = [roles.x + 1, roles.y + 1] + ([roles.z + 1] if roles.z is not None else [])
    sub = wcs.sub(keep)
    sub.wcs.crpix[2] -= params.channel_start
    header = sub.to_header()
    for key in ("BUNIT", "BMAJ", "BMIN", "BPA", "OBJECT", "TELESCOP", "RESTFRQ", "RESTFREQ", "SPECSYS", "DATE-OBS"):
        if key in dataset.handle.header:
            header[key] = dataset.handle.header[key]
    ranges = f"{format_ranges(params.line_free)} ({len(params.line_free)} channels)"
    header["HISTORY"] = f"visivo-gpu-server baseline method={params.method} order={params.order}"
    header["HISTORY"] = f"channels={params.channel_start}..{params.channel_end} line-free {ranges}"
    header["HISTORY"] = "no extrapolation: order 0 where line-free data do not bracket a spectrum"
    header["HISTORY"] = f"source={dataset.path.name}"
    header["HISTORY"] = f"created {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
    return header


def subtract(ctx: JobContext, dataset: Dataset, params: BaselineParams, output_dir: Path) -> dict[str, Any]:
    """Fit and subtract per y-slab, stream the result to a FITS file; returns the response body."""
    source = require_cube(dataset)
    _, ny, nx = source.shape
    nz = params.channel_end - params.channel_start + 1
    z = slice(params.channel_start, params.channel_end + 1)
    lf = np.asarray(params.line_free, dtype=np.int64) - params.channel_start
    check_rows((nz, ny, nx), 24.0, f"Baseline of {nx}×{ny}×{nz} voxels (one row slab)")
    kernels = ctx.kernels("baseline")
    # CPU with numba, here: normal equations in one pass, residual streamed (a cluster runs the array kernels)
    fast = ctx.compiled("baseline") if getattr(ctx, "cluster", None) is None else None
    stem = dataset.path.name.split(".fits")[0]
    path = unique_output_path(output_dir, f"{stem}_baseline_{params.method}{params.order}")
    partial = None
    lo, hi = np.inf, -np.inf
    order, method = params.order, params.method

    def compute(block: Any) -> tuple[Any, Any]:
        return kernels.subtract_baseline(block, lf, order=order, method=method)

    def compiled_slabs() -> Any:  # compiled CPU path: the stored slab in, the residual and its range out
        slabs = y_slabs((nz, ny, nx), ctx.chunk_bytes, bytes_per_voxel=24.0)
        for i, ys in enumerate(slabs):
            ctx.check_cancelled()
            raw = source.read_raw(z=z, y=ys)
            out, rms, span = fast.subtract_baseline_raw(raw.data, lf, order=order, method=method,
                                                        bscale=raw.bscale, bzero=raw.bzero, blank=raw.blank)
            ctx.progress((i + 1) / len(slabs))
            yield ys, (out, rms), (float(span[0]), float(span[1]))

    def array_slabs() -> Any:  # the kernel tree (NumPy or CuPy) here, or the Dask workers
        for ys, (out, rms) in stream_over_slabs(ctx, source, z, compute, bytes_per_voxel=24.0):
            finite = np.isfinite(out)
            span = (float(out[finite].min()), float(out[finite].max())) if finite.any() else (np.inf, -np.inf)
            yield ys, (out, rms), span

    partials: dict[int, np.ndarray] = {}
    with CubeWriter(path, _header(dataset, params), (nz, ny, nx), exclusive=True) as writer:
        for ys, (out, rms), span in (compiled_slabs() if fast is not None else array_slabs()):
            partials[ys.start] = rms
            lo, hi = min(lo, span[0]), max(hi, span[1])
            writer.write(ys, out)
            del out
        written = writer.commit()
    for start in sorted(partials):  # in slab order, whatever order the tiles came in: the same sums
        rms = partials[start]
        partial = rms if partial is None else to_host(kernels.baseline_rms_combine(partial, rms))
    before, after = (float(v) for v in to_host(kernels.baseline_rms_finalize(partial)))
    return {
        "width": nx, "height": ny, "depth": nz,
        "range_min": lo if np.isfinite(lo) else 0.0, "range_max": hi if np.isfinite(hi) else 0.0,
        "poly_order": params.order, "method": params.method, "fit_channels": list(params.line_free),
        "channel_start": params.channel_start, "channel_end": params.channel_end,
        "rms_before": before, "rms_after": after, "output_path": str(written),
        "pixels_by_outcome": outcome_counts(to_host(partial), params.order, params.method),
        "computed_on": "gpu" if ctx.on_gpu else "cpu",
    }

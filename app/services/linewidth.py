"""Line-width maps: FWHM from a per-pixel Gaussian fit and the equivalent width.

``FWHM = 2·√(2 ln 2)·σ ≈ 2.3548·σ`` from a batched Levenberg–Marquardt Gaussian fit of every
spectrum (kernel ``linewidth.gaussian_linewidth``); ``EW = Σ I·Δv / max I``. The cube is split
into ``VISIVO_LINEWIDTH_CHUNKS`` row chunks that run as concurrent heavy jobs; within a chunk
y-slabs bound the memory. Pixels under the SNR cut (peak / robust noise, ``VISIVO_LINEWIDTH_SNR``)
and failed fits are NaN. On a CPU job with numba (here, or on Dask workers that take raw tiles) the compiled kernel
:mod:`cpu_fallback.compiled.linewidth` reads the stored FITS data in y-slab views (same rules and
maps as the NumPy oracle, which runs with ``VISIVO_COMPILED=0``); the answer's ``kernel`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.compute.dispatch import JobContext
from app.compute.raw_slabs import map_over_raw_slabs
from app.compute.slab_runner import map_over_slabs
from app.errors import InvalidRequest
from app.io.spectral import SpectralAxis, check_rest_frequency, check_velocity_convention, spectral_axis
from app.services.budget import check_rows
from app.services.cube_reads import clamp_range, require_cube
from app.services.encoding import encode_array
from app.services.masking import MaskedSource, MaskRequest, PackedMask, apply_mask, map_over_masked_slabs
from app.services.sessions import Dataset
from kernel_common.views import finite_range

METHODS = (None, "fwhm", "ew")


@dataclass(frozen=True)
class LinewidthParams:
    channel_start: int
    channel_end: int
    threshold: float | None
    method: str | None
    rest_freq_hz: float | None
    snr_cut: float
    velocity_convention: str | None = None


def resolve(dataset: Dataset, *, channel_start, channel_end, mask_enabled: bool, threshold_value,
            method: str | None, rest_freq_hz, snr_cut: float,
            velocity_convention: str | None = None) -> LinewidthParams:
    """Validate a line-width request into parameters."""
    source = require_cube(dataset)
    if method not in METHODS:
        raise InvalidRequest("method must be null, 'fwhm' or 'ew'.")
    if channel_start is not None and channel_end is not None and channel_start > channel_end:
        raise InvalidRequest("Invalid channel range.")
    c0, c1 = clamp_range(channel_start, channel_end, source.shape[0], "channel")
    if c1 - c0 + 1 < 4:
        raise InvalidRequest("A Gaussian fit needs at least 4 channels.")
    rest = check_rest_frequency(rest_freq_hz)
    convention = check_velocity_convention(velocity_convention)
    threshold = float(threshold_value) if mask_enabled and threshold_value is not None else None
    return LinewidthParams(c0, c1, threshold, method, rest, snr_cut, convention)


def row_chunks(ny: int, chunks: int) -> list[slice]:
    """``chunks`` contiguous row ranges covering ``0..ny`` (fewer when ``ny`` is small)."""
    edges = np.linspace(0, ny, min(max(1, chunks), ny) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _axis(dataset: Dataset, params: LinewidthParams) -> SpectralAxis:
    return spectral_axis(dataset.handle.wcs_info, dataset.handle.source.shape[0], rest_freq_hz=params.rest_freq_hz,
                         velocity_convention=params.velocity_convention)


def _blank_outside(keep: Any, block: Any) -> Any:
    """``block`` with NaN where ``keep`` is false (NumPy or CuPy, broadcasting)."""
    if isinstance(block, np.ndarray):
        return np.where(keep, block, np.float32(np.nan)).astype(np.float32, copy=False)
    import cupy  # noqa: PLC0415

    return cupy.where(keep, block, cupy.float32(cupy.nan)).astype(cupy.float32, copy=False)


def linewidth_rows(ctx: JobContext, dataset: Dataset, params: LinewidthParams, rows: slice,
                   resident=None, mask: PackedMask | None = None) -> dict[str, Any]:
    """FWHM and EW maps of one row chunk (with a noise-aware ``mask``: over its voxels only)."""
    source = require_cube(dataset)
    z = slice(params.channel_start, params.channel_end + 1)
    check_rows((z.stop - z.start, 1, source.shape[2]), 48.0, "Line width (one row slab)")
    axis = _axis(dataset, params)
    coords, widths = axis.coords[z], axis.widths[z]
    # a noise-aware mask blanks float32 slabs (array kernels); otherwise the compiled fit runs here, or on
    # the Dask workers' raw tiles when the cluster takes them (``ctx.compiled`` says None when it does not)
    fast = None if mask is not None else ctx.compiled("linewidth")
    if fast is not None:  # compiled per-pixel fit straight from the stored FITS data (y-slab views)
        maps = map_over_raw_slabs(ctx, source, z, lambda raw: _compiled_maps(fast, raw, params, coords, widths),
                                  rows=rows)
        return {"rows": (rows.start, rows.stop), "maps": maps, "unit": axis.unit, "computed_on": "cpu",
                "kernel": "numba"}
    kernels = ctx.kernels("linewidth")

    def compute(block: Any) -> dict:
        if params.method == "ew":
            return {"ew": kernels.equivalent_width(block, widths, snr_cut=params.snr_cut,
                                                   threshold=params.threshold)}
        fwhm, ew = kernels.gaussian_linewidth(block, coords, widths, snr_cut=params.snr_cut,
                                              threshold=params.threshold)
        return {"fwhm": fwhm, "ew": ew}

    def masked(block: Any, keep: Any) -> dict:
        # FWHM: whole spectra of the pixels the mask touches (the fit needs line-free channels for its
        # noise and significance); EW: over the mask's voxels, the mask replacing the SNR cut
        out = {"ew": kernels.equivalent_width(_blank_outside(keep, block), widths, snr_cut=0.0,
                                              threshold=params.threshold)}
        if params.method != "ew":
            fwhm, _ = kernels.gaussian_linewidth(_blank_outside(keep.any(axis=0)[None], block), coords, widths,
                                                 snr_cut=params.snr_cut, threshold=params.threshold)
            out["fwhm"] = fwhm
        return out

    if mask is not None:
        maps = map_over_masked_slabs(ctx, MaskedSource(source, mask), z, masked, rows=rows, bytes_per_voxel=56.0,
                                     with_mask=True)
    else:
        maps = map_over_slabs(ctx, source, z, compute, bytes_per_voxel=48.0, resident=resident, rows=rows)
    return {"rows": (rows.start, rows.stop), "maps": maps, "unit": axis.unit,
            "computed_on": "gpu" if ctx.on_gpu else "cpu", "kernel": "cupy" if ctx.on_gpu else "numpy"}


def _compiled_maps(fast: Any, raw: Any, params: LinewidthParams, coords: np.ndarray,
                   widths: np.ndarray) -> dict[str, np.ndarray]:
    """FWHM/EW maps of one raw slab by :mod:`cpu_fallback.compiled.linewidth` (same rules as the oracle)."""
    scaling = {"bscale": raw.bscale, "bzero": raw.bzero, "blank": raw.blank}
    if params.method == "ew":
        return {"ew": fast.equivalent_width_raw(raw.data, widths, snr_cut=params.snr_cut,
                                                threshold=params.threshold, **scaling)}
    fwhm, ew = fast.gaussian_linewidth_raw(raw.data, coords, widths, snr_cut=params.snr_cut,
                                           threshold=params.threshold, **scaling)
    return {"fwhm": fwhm, "ew": ew}


def assemble(dataset: Dataset, params: LinewidthParams, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Stitch row chunks into the response (both maps as float32 base64 unless ``method`` picks one)."""
    _, ny, nx = require_cube(dataset).shape
    names = ("ew",) if params.method == "ew" else ("fwhm", "ew")
    full = {name: np.full((ny, nx), np.nan, dtype=np.float32) for name in names}
    for part in parts:
        y0, y1 = part["rows"]
        for name in names:
            full[name][y0:y1] = part["maps"][name]
    unit = parts[0]["unit"] if parts else ""
    body: dict[str, Any] = {
        "width": nx, "height": ny, "scalar_type": "float32", "method": params.method or "fwhm+ew",
        "fwhm_unit": unit, "ew_unit": unit, "bunit": dataset.info.get("bunit", ""),
        "channel_start": params.channel_start, "channel_end": params.channel_end,
        "snr_cut": params.snr_cut, "threshold_used": params.threshold,
        "computed_on": parts[0]["computed_on"] if parts else "cpu", "chunks": len(parts),
        "kernel": parts[0].get("kernel") if parts else None,
        **_axis(dataset, params).describe(),
    }
    if params.method == "fwhm":
        del full["ew"]
    for name, data in full.items():
        lo, hi = finite_range(data)
        body[f"{name}_range_min"], body[f"{name}_range_max"] = lo, hi
        body[f"{name}_base64"] = encode_array(data)
        body[f"{name}_valid_pixels"] = int(np.isfinite(data).sum())
    return body


def masked_linewidth(ctx: JobContext, dataset: Dataset, params: LinewidthParams, chunks: list[slice],
                     mask: MaskRequest, *, output_dir: Path, compression: str = "none") -> dict[str, Any]:
    """The line-width answer over a noise-aware mask: the mask of the channel range first, then the row
    chunks (on the job's helper threads) over its voxels; ``masks`` describes the mask."""
    packed, info = apply_mask(ctx, dataset, mask, params.channel_start, params.channel_end, output_dir=output_dir,
                              compression=compression)
    parts = ctx.map(lambda rows: linewidth_rows(ctx, dataset, params, rows, mask=packed), chunks)
    return {**assemble(dataset, params, parts), "masks": [info]}

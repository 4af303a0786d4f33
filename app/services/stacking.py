"""Spectral stacking of N open cubes of equal shape.

``mode: "spectrum"`` (default): each cube collapses to its spatial-mean spectrum over its finite
pixels (kernel ``stacking.mean_spectrum_partial/combine/finalize`` over y-slabs), then the N
spectra are combined channel by channel with ``mean``, ``median`` or ``weighted_mean``
(weights: explicit ``weights``, else ``weight_by`` = ``uniform`` | ``rms`` (1/σ², σ = 1.4826·MAD of
the cube's mean spectrum) | ``peak`` (the cube's peak voxel)). The answer is one spectrum:
``rows = 1``, ``cols = channels``.

``mode: "cube"``: voxel-by-voxel stacking of aligned cubes into a new FITS cube, registered as a
new dataset of the session (same methods and weights).

On the Dask lane the workers compute the mean-spectrum partials of their y-slabs (combined here in
slab order) and, for ``mode: "cube"``, the stacked slab of every cube's tile, which the server
writes into the output file as it arrives.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from app.compute.backend import to_host
from app.compute.chunking import y_slabs
from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_blocks, stream_over_slabs
from app.errors import InvalidRequest
from app.io.fits_writer import CubeWriter, unique_output_path
from app.io.spectral import spectral_axis
from app.services.budget import check_rows
from app.services.cube_reads import require_cube
from app.services.encoding import encode_array
from app.services.masking import MaskedSource, MaskRequest, PackedMask, apply_mask
from app.services.sessions import Dataset
from kernel_common.views import finite_range

METHODS = ("mean", "median", "weighted_mean")
WEIGHT_BY = ("uniform", "rms", "peak")


def validate(datasets: list[Dataset], *, method: str, weight_by: str, weights: list[float] | None) -> None:
    """Equal shapes, ≥ 2 cubes, known method/weighting, weights matching in number."""
    if len(datasets) < 2:
        raise InvalidRequest("Stacking needs at least 2 datasets.")
    if method not in METHODS:
        raise InvalidRequest(f"method must be one of {', '.join(METHODS)}.")
    if weight_by not in WEIGHT_BY:
        raise InvalidRequest(f"weight_by must be one of {', '.join(WEIGHT_BY)}.")
    shapes = [require_cube(d).shape for d in datasets]
    for d, shape in zip(datasets[1:], shapes[1:], strict=True):
        if shape != shapes[0]:
            raise InvalidRequest(
                f"Shape mismatch: {datasets[0].dataset_id} is {shapes[0][2]}x{shapes[0][1]}x{shapes[0][0]} "
                f"but {d.dataset_id} ({d.path.name}) is {shape[2]}x{shape[1]}x{shape[0]} (W x H x D).")
    if weights:
        if len(weights) != len(datasets):
            raise InvalidRequest(f"weights has {len(weights)} entries for {len(datasets)} datasets.")
        if not all(np.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
            raise InvalidRequest("weights must be finite, non-negative and not all zero.")


def _weights(kernels, spectra: np.ndarray, peaks: np.ndarray, method: str, weight_by: str,
             weights: list[float] | None) -> np.ndarray | None:
    if method != "weighted_mean":
        return None
    if weights:
        return np.asarray(weights, dtype=np.float64)
    w = np.asarray(to_host(kernels.stack_weights(spectra, peaks, weight_by=weight_by)))  # sync
    if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
        raise InvalidRequest(f"weight_by='{weight_by}' gives undefined weights for these cubes: {w.tolist()}")
    return w


def mean_spectrum(ctx: JobContext, dataset: Dataset, mask: PackedMask | None = None, *,
                  span: tuple[float, float] = (0.0, 1.0)) -> tuple[np.ndarray, float]:
    """Spatial-mean spectrum over finite pixels (within ``mask`` when given) and the peak voxel (host arrays).

    On the Dask lane (no mask) the partials of the y-slabs are computed by the workers and combined
    here in slab order (the same sums as the local path); progress then goes from ``span[0]`` to
    ``span[1]``.
    """
    source = require_cube(dataset)
    reader = source if mask is None else MaskedSource(source, mask)
    kernels = ctx.kernels("stacking")
    check_rows(source.shape, 8.0, f"Mean spectrum of {dataset.dataset_id} (one row slab)")
    partial = None
    slabs = y_slabs(source.shape, ctx.chunk_bytes, bytes_per_voxel=8.0)
    if mask is None and getattr(ctx, "cluster", None) is not None and not ctx.on_gpu and source.origin is not None:
        reads = [(slice(None), ys, slice(None)) for ys in slabs]
        for part in map_over_blocks(ctx, source, reads, lambda b: kernels.mean_spectrum_partial(b), span=span):
            partial = part if partial is None else kernels.mean_spectrum_combine(partial, part)
        spectrum, peak = kernels.mean_spectrum_finalize(partial)
        return np.asarray(spectrum), float(peak)
    for ys in slabs:
        ctx.check_cancelled()
        block = reader.read(y=ys)
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            block = cupy.asarray(block)
        part = kernels.mean_spectrum_partial(block)
        partial = part if partial is None else kernels.mean_spectrum_combine(partial, part)
    spectrum, peak = kernels.mean_spectrum_finalize(partial)
    return np.asarray(to_host(spectrum)), float(to_host(peak))  # sync


def build_masks(ctx: JobContext, datasets: list[Dataset], masks: list[MaskRequest] | None, *,
                output_dir: Path | None, compression: str = "none") -> tuple[list[PackedMask | None], list | None]:
    """Each cube's noise-aware mask over all its channels (or ``None`` each) and the answer's ``masks``."""
    if masks is None:
        return [None] * len(datasets), None
    built = [apply_mask(ctx, d, m, 0, require_cube(d).shape[0] - 1, output_dir=output_dir, compression=compression)
             for d, m in zip(datasets, masks, strict=True)]
    return [b[0] for b in built], [b[1] for b in built]


def stack_spectra(ctx: JobContext, datasets: list[Dataset], *, method: str, weight_by: str,
                  weights: list[float] | None, rest_freq_hz: float | None = None,
                  velocity_convention: str | None = None, masks: list[MaskRequest] | None = None,
                  output_dir: Path | None = None) -> dict[str, Any]:
    """The combined spectrum; ``spectral_values`` on the first cube's axis (velocity when a rest frequency is known).

    With ``masks`` (one per cube) each cube's mean spectrum averages the voxels of its mask only.
    """
    kernels = ctx.kernels("stacking")
    packed, infos = build_masks(ctx, datasets, masks, output_dir=output_dir)
    spectra, peaks = [], []
    for i, d in enumerate(datasets):
        spectrum, peak = mean_spectrum(ctx, d, packed[i],
                                       span=(i / (len(datasets) + 1), (i + 1) / (len(datasets) + 1)))
        spectra.append(spectrum)
        peaks.append(peak)
        ctx.progress((i + 1) / (len(datasets) + 1))
    stack = np.vstack(spectra)
    w = _weights(kernels, stack, np.asarray(peaks), method, weight_by, weights)
    combined = np.asarray(to_host(kernels.combine_spectra(stack, method=method, weights=w)), dtype=np.float32)
    axis = spectral_axis(datasets[0].handle.wcs_info, stack.shape[1], rest_freq_hz=rest_freq_hz,
                         velocity_convention=velocity_convention)
    lo, hi = finite_range(combined)
    return {
        "rows": 1, "cols": int(combined.size), "layout": "rows = 1, cols = channels (one stacked spectrum)",
        "scalar_type": "float32", "method": method, "weight_by": weight_by if method == "weighted_mean" else None,
        "weights_used": None if w is None else w.tolist(), "n_cubes": len(datasets),
        "range_min": lo, "range_max": hi, **axis.describe(), "spectral_values": axis.coords.tolist(),
        "bunit": datasets[0].info.get("bunit", ""), "peaks": peaks,
        "spectra_base64": [encode_array(s) for s in stack],
        "data_base64": encode_array(combined), "computed_on": "gpu" if ctx.on_gpu else "cpu",
        **({"masks": infos} if infos is not None else {}),
    }


def stack_cube(ctx: JobContext, datasets: list[Dataset], *, method: str, weight_by: str,
               weights: list[float] | None, output_dir: Path, masks: list[MaskRequest] | None = None) -> dict[str, Any]:
    """Voxel-by-voxel stack written to a new FITS cube (header and WCS of the first cube).

    With ``masks`` (one per cube) each cube's voxels outside its mask are blank in the stack.
    """
    kernels = ctx.kernels("stacking")
    packed, infos = build_masks(ctx, datasets, masks, output_dir=output_dir)
    readers = [require_cube(d) if m is None else MaskedSource(require_cube(d), m) for d, m in zip(datasets, packed,
                                                                                                   strict=True)]
    w = None
    if method == "weighted_mean":
        if weights:
            w = np.asarray(weights, dtype=np.float64)
        else:
            spectra, peaks = zip(*(mean_spectrum(ctx, d, m) for d, m in zip(datasets, packed, strict=True)),
                                 strict=True)
            w = _weights(kernels, np.vstack(spectra), np.asarray(peaks), method, weight_by, None)
    first = datasets[0]
    source = require_cube(first)
    header = fits.Header(first.handle.wcs_info.wcs.sub(
        [a + 1 for a in (first.handle.wcs_info.roles.x, first.handle.wcs_info.roles.y, first.handle.wcs_info.roles.z)
         if a is not None]).to_header())
    if "BUNIT" in first.handle.header:
        header["BUNIT"] = first.handle.header["BUNIT"]
    header["HISTORY"] = f"visivo-gpu-server stack mode=cube method={method} weights={None if w is None else w.tolist()}"
    for d in datasets:
        header["HISTORY"] = f"input={d.path.name}"
    header["HISTORY"] = f"created {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
    path = unique_output_path(output_dir, f"{first.path.name.split('.fits')[0]}_stack{len(datasets)}_{method}")
    lo, hi = np.inf, -np.inf
    check_rows(source.shape, 4.0 * (len(datasets) + 2), f"Stack of {len(datasets)} cubes (one row slab)")

    def compute(blocks: list) -> np.ndarray:
        return np.asarray(to_host(kernels.stack_cubes(blocks, method=method, weights=w)), dtype=np.float32)

    with CubeWriter(path, header, source.shape, exclusive=True) as writer:
        for ys, out in stream_over_slabs(ctx, readers, slice(None), compute,
                                         bytes_per_voxel=4.0 * (len(datasets) + 2)):
            b_lo, b_hi = finite_range(out)
            if np.isfinite(out).any():
                lo, hi = min(lo, b_lo), max(hi, b_hi)
            writer.write(ys, out)
            del out
        written = writer.commit()
    nz, ny, nx = source.shape
    return {"mode": "cube", "method": method, "n_cubes": len(datasets), "width": nx, "height": ny, "depth": nz,
            "range_min": lo if np.isfinite(lo) else 0.0, "range_max": hi if np.isfinite(hi) else 0.0,
            "weights_used": None if w is None else w.tolist(), "output_path": str(written),
            "computed_on": "gpu" if ctx.on_gpu else "cpu", **({"masks": infos} if infos is not None else {})}

"""Moment maps (reference convention and CASA immoments convention).

Reference convention (API reference table): 0 ΣI·Δv; 1 ΣI·v·Δv/M0; 2 variance
ΣI·(v−M1)²·Δv/M0; 3 skewness μ₃/σ³; 4 excess kurtosis μ₄/σ⁴−3; 5 μ₅/σ⁵;
6 RMS √(ΣI²Δv/ΣΔv); 8 max; 10 min. CASA convention: immoments numbering −1…11
(2 is the dispersion). Spectral coordinates are in km/s for velocity axes (and for
frequency axes when a rest frequency is given), else in the axis' SI unit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from app.compute.dispatch import JobContext
from app.compute.raw_slabs import map_over_raw_slabs
from app.compute.slab_runner import map_over_slabs
from app.errors import InvalidRequest
from app.io.fits_writer import unique_output_path, write_fits_atomic
from app.io.spectral import SpectralAxis, spectral_axis
from app.services.cube_reads import require_cube
from app.services.encoding import encode_array
from app.services.masking import MaskedSource, MaskRequest, PackedMask, apply_mask, map_over_masked_slabs
from app.services.sessions import Dataset
from kernel_common.views import finite_range

REFERENCE_ORDERS = (0, 1, 2, 3, 4, 5, 6, 8, 10)
CASA_ORDERS = tuple(range(-1, 12))
CASA_NAMES = {
    -1: "mean", 0: "integrated", 1: "weighted coordinate", 2: "weighted dispersion", 3: "median",
    4: "median coordinate", 5: "standard deviation", 6: "rms", 7: "absolute mean deviation",
    8: "maximum", 9: "coordinate of maximum", 10: "minimum", 11: "coordinate of minimum",
}
REFERENCE_NAMES = {
    0: "integrated intensity", 1: "intensity-weighted coordinate", 2: "intensity-weighted variance",
    3: "skewness", 4: "excess kurtosis", 5: "standardised 5th moment", 6: "rms", 8: "maximum", 10: "minimum",
}


@dataclass(frozen=True)
class MomentParams:
    order: int
    convention: str  # "reference" | "casa"
    channel_start: int
    channel_end: int
    threshold: float | None
    include: tuple[float, ...] | None
    exclude: tuple[float, ...] | None
    rest_freq_hz: float | None
    velocity_convention: str | None = None
    orders: tuple[int, ...] | None = None  # several maps in one pass (app/services/moment_multi.py)
    uncertainty: bool = False  # also the propagated 1σ maps of orders 0-2
    noise_rms: float | None = None  # σ per channel for the uncertainty (data unit); None: estimated


def moment_unit(order: int, convention: str, bunit: str, spec_unit: str) -> str:
    """Unit of a moment map: e.g. ``Jy/beam km/s`` (0), ``km/s`` (1), ``km^2/s^2`` (variance)."""
    squared = f"{spec_unit}^2" if "/" not in spec_unit else "^2/".join(spec_unit.split("/")) + "^2"
    if convention == "casa":
        if order == 0:
            return f"{bunit} {spec_unit}".strip()
        if order in (1, 2, 4, 9, 11):
            return spec_unit
        return bunit
    if order == 0:
        return f"{bunit} {spec_unit}".strip()
    if order == 1:
        return spec_unit
    if order == 2:
        return squared
    if order in (3, 4, 5):
        return ""
    return bunit


def resolve_threshold(
    *, threshold: float | None, mask_enabled: bool, threshold_value: float | None, rms: float | None, snr: float,
) -> float | None:
    """The mask threshold: explicit ``threshold``; else ``threshold_value`` when ``mask_enabled``;
    else ``snr·rms`` when ``rms`` is given; else no mask."""
    if threshold is not None:
        return float(threshold)
    if mask_enabled and threshold_value is not None:
        return float(threshold_value)
    if rms is not None:
        if rms <= 0 or not np.isfinite(rms):
            raise InvalidRequest("rms must be a positive number.")
        return float(snr) * float(rms)
    return None


def _guard(order: int, data: np.ndarray, axis: SpectralAxis) -> np.ndarray:
    """Reference convention physical-range guard: M1 outside the sampled axis, M2 outside [0, span²] → NaN."""
    lo, hi = float(np.min(axis.coords)), float(np.max(axis.coords))
    if order == 1:
        data = np.where((data >= lo) & (data <= hi), data, np.nan).astype(np.float32)
    elif order == 2:
        span = (hi - lo) + float(np.max(axis.widths))
        data = np.where((data >= 0) & (data <= span * span), data, np.nan).astype(np.float32)
    return data


def axis_of(dataset: Dataset, params: MomentParams) -> SpectralAxis:
    """The dataset's spectral axis with the request's rest frequency and velocity convention."""
    return spectral_axis(dataset.handle.wcs_info, dataset.handle.source.shape[0], rest_freq_hz=params.rest_freq_hz,
                         velocity_convention=params.velocity_convention)


def compute_moment_maps(ctx: JobContext, dataset: Dataset, params: MomentParams, orders: tuple[int, ...], *,
                        resident=None, mask: PackedMask | None = None) -> tuple[dict[int, np.ndarray], str]:
    """Maps of ``orders`` (one pass) over the inclusive channel range, and the kernel that made them.

    On a CPU job with numba the compiled kernels read the stored FITS data in y-slab views
    (:func:`~app.compute.raw_slabs.map_over_raw_slabs`; CASA medians 3 and 4 excepted); otherwise
    the tree's kernels (NumPy oracle or CuPy) run on float32 slabs. The kernel is ``"numba"``,
    ``"numpy"`` or ``"cupy"``. The physical-range guard of the reference convention is not applied.
    With a noise-aware ``mask`` the voxels outside it are blanked in float32 slabs (the tree's kernels,
    no compiled raw path, no resident cube; :func:`app.services.masking.map_over_masked_slabs`).
    """
    source = require_cube(dataset)
    z = slice(params.channel_start, params.channel_end + 1)
    full_axis = axis_of(dataset, params)
    coords, widths = full_axis.coords[z], full_axis.widths[z]
    raw_ok = mask is None  # a mask blanks float32 slabs; raw tiles run here or on the Dask workers
    if params.convention == "casa":
        fast = ctx.compiled("moments_casa") if raw_ok else None  # on a Dask cluster too: workers read raw tiles
        if fast is not None and set(orders) <= fast.COMPILED_MOMENTS:
            return map_over_raw_slabs(ctx, source, z, lambda raw: fast.casa_moment_maps_raw(
                raw.data, coords, widths, moments=orders, include=params.include, exclude=params.exclude,
                bscale=raw.bscale, bzero=raw.bzero, blank=raw.blank)), "numba"
        kernels = ctx.kernels("casa_moments")

        def compute(block: Any) -> dict:
            return kernels.casa_moment_maps(block, coords, widths, moments=orders,
                                            include=params.include, exclude=params.exclude)
    else:
        fast = ctx.compiled("moments_ref") if raw_ok else None
        if fast is not None:
            return map_over_raw_slabs(ctx, source, z, lambda raw: fast.moment_maps_raw(
                raw.data, coords, widths, orders=orders, threshold=params.threshold,
                bscale=raw.bscale, bzero=raw.bzero, blank=raw.blank)), "numba"
        kernels = ctx.kernels("moments")

        def compute(block: Any) -> dict:
            return kernels.moment_maps(block, coords, widths, orders=orders, threshold=params.threshold)

    if mask is not None:
        maps = map_over_masked_slabs(ctx, MaskedSource(source, mask), z, compute)
    else:
        maps = map_over_slabs(ctx, source, z, compute, resident=resident)
    return maps, "cupy" if ctx.on_gpu else "numpy"


def _moment(ctx: JobContext, dataset: Dataset, params: MomentParams, resident=None,
            mask: PackedMask | None = None) -> tuple[np.ndarray, str]:
    """The guarded float32 map of ``params.order`` and the kernel that computed it."""
    maps, kernel = compute_moment_maps(ctx, dataset, params, (params.order,), resident=resident, mask=mask)
    data = np.asarray(maps[params.order], dtype=np.float32)
    if params.convention == "reference":
        full_axis = axis_of(dataset, params)
        z = slice(params.channel_start, params.channel_end + 1)
        data = _guard(params.order, data, SpectralAxis(full_axis.coords[z], full_axis.widths[z], full_axis.unit,
                                                      full_axis.ctype, full_axis.kind))
    return data, kernel


def compute_moment(ctx: JobContext, dataset: Dataset, params: MomentParams, *, resident=None) -> np.ndarray:
    """The moment map (float32, (ny, nx)) over the inclusive channel range."""
    return _moment(ctx, dataset, params, resident)[0]


def moment_header(dataset: Dataset, params: MomentParams, unit: str, axis: SpectralAxis,
                  mask: MaskRequest | None = None) -> fits.Header:
    """2-D celestial WCS, BUNIT and HISTORY provenance for a saved moment map."""
    wcs = dataset.handle.wcs_info.wcs
    header = wcs.celestial.to_header() if wcs.celestial.naxis == 2 else fits.Header()
    for key in ("OBJECT", "TELESCOP", "BMAJ", "BMIN", "BPA", "RADESYS", "EQUINOX", "DATE-OBS", "RESTFRQ"):
        if key in dataset.handle.header:
            header[key] = dataset.handle.header[key]
    if axis.rest_freq_hz:
        header["RESTFRQ"] = (axis.rest_freq_hz, f"[Hz] rest frequency used ({axis.rest_freq_source})")
    header["BUNIT"] = unit
    names = CASA_NAMES if params.convention == "casa" else REFERENCE_NAMES
    z = slice(params.channel_start, params.channel_end + 1)
    v = axis.coords[z]
    header["HISTORY"] = f"visivo-gpu-server moment order={params.order} ({names[params.order]})"
    header["HISTORY"] = f"convention={params.convention} channels={params.channel_start}..{params.channel_end}"
    header["HISTORY"] = f"spectral range {float(v.min()):.6g}..{float(v.max()):.6g} {axis.unit}"
    if axis.velocity_convention:
        header["HISTORY"] = (f"{axis.ctype} axis as {axis.velocity_convention} velocity, rest frequency "
                             f"{axis.rest_freq_hz} Hz ({axis.rest_freq_source})")
    header["HISTORY"] = f"threshold={params.threshold} include={params.include} exclude={params.exclude}"
    for line in mask.plan.history() if mask is not None else ():
        header["HISTORY"] = line
    header["HISTORY"] = f"source={dataset.path.name}"
    header["HISTORY"] = f"created {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
    return header


def moment_product(ctx: JobContext, dataset: Dataset, params: MomentParams, *, save: bool, output_dir: Path,
                   compression: str, resident=None, mask: MaskRequest | None = None) -> dict[str, Any]:
    """Compute the map and build the response (optionally writing the FITS product).

    With ``mask`` the noise-aware mask of the channel range is built first and only its voxels
    count (the answer's ``masks`` describes it).
    """
    packed, masks = None, None
    if mask is not None:
        packed, info = apply_mask(ctx, dataset, mask, params.channel_start, params.channel_end,
                                  output_dir=output_dir, compression=compression)
        masks = [info]
    if params.orders is not None or params.uncertainty:
        from app.services.moment_multi import multi_product  # noqa: PLC0415

        body = multi_product(ctx, dataset, params, save=save, output_dir=output_dir, compression=compression,
                             resident=resident, mask=packed, mask_request=mask)
        return {**body, "masks": masks} if masks is not None else body
    data, kernel = _moment(ctx, dataset, params, resident, packed)
    if not np.isfinite(data).any():
        raise InvalidRequest("No valid voxels found for the selected moment parameters.")
    axis = axis_of(dataset, params)
    info = dataset.info
    unit = moment_unit(params.order, params.convention, info.get("bunit", ""), axis.unit)
    lo, hi = finite_range(data)
    z = slice(params.channel_start, params.channel_end + 1)
    body: dict[str, Any] = {
        "width": int(data.shape[1]), "height": int(data.shape[0]), "scalar_type": "float32",
        "order": params.order, "moment_order": params.order, "convention": params.convention,
        "moment_name": (CASA_NAMES if params.convention == "casa" else REFERENCE_NAMES)[params.order],
        "channel_start": params.channel_start, "channel_end": params.channel_end,
        "spectral_range": [float(axis.coords[z].min()), float(axis.coords[z].max())],
        "range_min": lo, "range_max": hi,
        "spectral_axis_type": info.get("spectral_axis_type", ""), **axis.describe(),
        "moment_unit": unit, "bunit": info.get("bunit", ""),
        "threshold_used": params.threshold, "include": params.include, "exclude": params.exclude,
        "wcs_status": info.get("wcs_status", "ok"), "wcs_warning_message": info.get("wcs_warning_message", ""),
        "computed_on": "gpu" if ctx.on_gpu else "cpu", "kernel": kernel,
        "compression": compression, "data_base64": encode_array(data, compression),
    }
    if save:
        stem = dataset.path.name.split(".fits")[0]
        path = unique_output_path(output_dir, f"{stem}_mom{params.order}_{params.convention}"
                                              f"_ch{params.channel_start}-{params.channel_end}")
        path = write_fits_atomic(path, data, moment_header(dataset, params, unit, axis, mask), exclusive=True)
        body["output_path"] = str(path)
    if masks is not None:
        body["masks"] = masks
    return body

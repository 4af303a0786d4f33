"""Gaussian line-fit maps: amplitude, centre and σ with 1σ errors, reduced χ², one or two components.

The one-component fit is the line-width fit (kernel ``linefit.gaussian_linefit`` runs the same
Levenberg–Marquardt and acceptance rule as ``linewidth.gaussian_linewidth``), so ``2.3548·sigma``
equals the line-width FWHM map wherever either is finite. Errors are ``√diag((JᵀJ)⁻¹·RSS/(n−p))``
(``curve_fit``'s default ``absolute_sigma=False``), the reduced χ² is ``RSS/((n−p)·s²)`` with ``s``
the robust noise of the residuals; both over the whole channel range. With ``components: 2`` a
two-Gaussian fit is kept where it lowers the BIC by more than 10 (:mod:`kernel_common.gaussfit`).
Row chunks (``VISIVO_LINEWIDTH_CHUNKS``) run as concurrent heavy jobs; ``save`` writes one
multi-extension FITS (``EXTNAME`` per map, ``EXTVER`` = component) with the 2-D celestial WCS,
``BUNIT`` and HISTORY.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_slabs
from app.errors import InvalidRequest
from app.io.fits_writer import unique_output_path, write_hdulist_atomic
from app.io.spectral import SpectralAxis, check_rest_frequency, check_velocity_convention, spectral_axis
from app.services.budget import check_rows
from app.services.cube_reads import clamp_range, require_cube
from app.services.encoding import encode_array
from app.services.sessions import Dataset
from kernel_common.gaussfit import PARAMS
from kernel_common.views import finite_range

#: Working memory per voxel of a slab (input, window arrays, Jacobians of the two-component fit).
BYTES_PER_VOXEL = 64.0
#: Map names in answer and FITS order.
MAP_NAMES = (*(n for p in PARAMS for n in (p, p + "_err")), "reduced_chi2", "ncomp")


@dataclass(frozen=True)
class LinefitParams:
    channel_start: int
    channel_end: int
    threshold: float | None
    components: int
    rest_freq_hz: float | None
    snr_cut: float
    velocity_convention: str | None = None


def resolve(dataset: Dataset, *, channel_start, channel_end, mask_enabled: bool, threshold_value,
            components, rest_freq_hz, snr_cut: float, velocity_convention: str | None = None) -> LinefitParams:
    """Validate a line-fit request into parameters (:class:`InvalidRequest` with the reason)."""
    source = require_cube(dataset)
    if components not in (1, 2):
        raise InvalidRequest(f"components must be 1 or 2; got {components}.")
    if channel_start is not None and channel_end is not None and channel_start > channel_end:
        raise InvalidRequest("Invalid channel range.")
    c0, c1 = clamp_range(channel_start, channel_end, source.shape[0], "channel")
    if c1 - c0 + 1 < 3 * components + 1:
        raise InvalidRequest(f"A {components}-component Gaussian fit needs at least {3 * components + 1} channels.")
    if c1 - c0 + 1 < 4:
        raise InvalidRequest("A Gaussian fit needs at least 4 channels.")
    rest = check_rest_frequency(rest_freq_hz)
    convention = check_velocity_convention(velocity_convention)
    threshold = float(threshold_value) if mask_enabled and threshold_value is not None else None
    return LinefitParams(c0, c1, threshold, int(components), rest, float(snr_cut), convention)


def axis_of(dataset: Dataset, params: LinefitParams) -> SpectralAxis:
    """The cube's spectral axis (km/s where it allows, with the request's rest frequency and convention)."""
    return spectral_axis(dataset.handle.wcs_info, dataset.handle.source.shape[0], rest_freq_hz=params.rest_freq_hz,
                         velocity_convention=params.velocity_convention)


def linefit_rows(ctx: JobContext, dataset: Dataset, params: LinefitParams, rows: slice,
                 resident=None) -> dict[str, Any]:
    """Every map of one row chunk: ``{(name, component): (rows, nx)}`` (component None for 2-D maps)."""
    source = require_cube(dataset)
    z = slice(params.channel_start, params.channel_end + 1)
    check_rows((z.stop - z.start, 1, source.shape[2]), BYTES_PER_VOXEL, "Line fit (one row slab)")
    axis = axis_of(dataset, params)
    coords, widths = axis.coords[z], axis.widths[z]
    kernels = ctx.kernels("linefit")

    def compute(block: Any) -> dict:
        res = kernels.gaussian_linefit(block, coords, widths, components=params.components,
                                       snr_cut=params.snr_cut, threshold=params.threshold)
        out: dict[Any, Any] = {}
        for name, value in res.items():
            if value.ndim == 3:
                out.update({(name, k): value[k] for k in range(value.shape[0])})
            else:
                out[(name, None)] = value
        return out

    maps = map_over_slabs(ctx, source, z, compute, bytes_per_voxel=BYTES_PER_VOXEL, resident=resident, rows=rows)
    return {"rows": (rows.start, rows.stop), "maps": maps, "computed_on": "gpu" if ctx.on_gpu else "cpu"}


def units(axis: SpectralAxis, bunit: str) -> dict[str, str]:
    """Unit of each map: amplitude in the cube's BUNIT, centre and σ in the spectral unit."""
    out = {"amplitude": bunit, "centre": axis.unit, "sigma": axis.unit, "reduced_chi2": "", "ncomp": ""}
    return {name: out[name.removesuffix("_err")] for name in MAP_NAMES}


def assemble(dataset: Dataset, params: LinefitParams, parts: list[dict[str, Any]], *, save: bool,
             output_dir: Path, compression: str) -> dict[str, Any]:
    """Stitch row chunks into the answer: ``maps = {name: {unit, shape, range, data_base64}}``."""
    _, ny, nx = require_cube(dataset).shape
    ncomp = params.components
    full = {name: np.full((1 if name in ("reduced_chi2", "ncomp") else ncomp, ny, nx), np.nan, dtype=np.float32)
            for name in MAP_NAMES}  # fmt: skip
    for part in parts:
        y0, y1 = part["rows"]
        for (name, k), data in part["maps"].items():
            full[name][0 if k is None else k, y0:y1] = data
    axis = axis_of(dataset, params)
    bunit = dataset.info.get("bunit", "")
    unit = units(axis, bunit)
    if ncomp == 1:
        del full["ncomp"]
    maps: dict[str, Any] = {}
    for name, data in full.items():
        arr = data[0] if name in ("reduced_chi2", "ncomp") else data
        lo, hi = finite_range(arr)
        maps[name] = {"unit": unit[name], "shape": list(arr.shape), "range_min": lo, "range_max": hi,
                      "valid_pixels": int(np.isfinite(arr[0] if arr.ndim == 3 else arr).sum()),
                      "data_base64": encode_array(arr, compression)}
    fitted = np.isfinite(full["amplitude"][0])
    body: dict[str, Any] = {
        "width": nx, "height": ny, "scalar_type": "float32", "compression": compression,
        "components": ncomp, "maps": maps, "bunit": bunit,
        "channel_start": params.channel_start, "channel_end": params.channel_end,
        "snr_cut": params.snr_cut, "threshold_used": params.threshold,
        "fitted_pixels": int(fitted.sum()),
        "two_component_pixels": int((full["ncomp"][0] == 2).sum()) if ncomp == 2 else 0,
        "error_method": "sqrt(diag((J^T J)^-1 * RSS/(n-p))) over the channel range (curve_fit absolute_sigma=False)",
        "computed_on": parts[0]["computed_on"] if parts else "cpu", "chunks": len(parts),
        **axis.describe(),
    }
    if save:
        body["output_path"] = str(write_fits(output_dir, dataset, params, full, unit, axis))
    return body


def _header(dataset: Dataset, params: LinefitParams, axis: SpectralAxis, unit: str) -> fits.Header:
    wcs = dataset.handle.wcs_info.wcs
    header = wcs.celestial.to_header() if wcs.celestial.naxis == 2 else fits.Header()
    for key in ("OBJECT", "TELESCOP", "BMAJ", "BMIN", "BPA", "RADESYS", "EQUINOX", "DATE-OBS"):
        if key in dataset.handle.header:
            header[key] = dataset.handle.header[key]
    if axis.rest_freq_hz:
        header["RESTFRQ"] = (axis.rest_freq_hz, f"[Hz] rest frequency used ({axis.rest_freq_source})")
    header["BUNIT"] = unit
    return header


def write_fits(output_dir: Path, dataset: Dataset, params: LinefitParams, full: dict[str, np.ndarray],
               unit: dict[str, str], axis: SpectralAxis) -> Path:
    """One multi-extension FITS: a primary HDU with the provenance, then one ImageHDU per map and
    component (``EXTNAME`` = map name in capitals, ``EXTVER`` = component 1, 2), each with the 2-D
    celestial WCS, ``BUNIT`` and HISTORY."""
    z = slice(params.channel_start, params.channel_end + 1)
    v = axis.coords[z]
    history = [
        f"visivo-gpu-server linefit components={params.components} (Gaussian, batched Levenberg-Marquardt)",
        f"channels={params.channel_start}..{params.channel_end} spectral range {float(v.min()):.6g}.."
        f"{float(v.max()):.6g} {axis.unit}",
        f"snr_cut={params.snr_cut} threshold={params.threshold}",
        "errors: sqrt(diag((J^T J)^-1 RSS/(n-p))) (curve_fit absolute_sigma=False)",
        "reduced_chi2 = RSS/((n-p) s^2), s = 1.4826 MAD of the residuals",
        f"source={dataset.path.name}",
        f"created {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}",
    ]
    if axis.velocity_convention:
        history.insert(2, f"{axis.ctype} axis as {axis.velocity_convention} velocity, rest frequency "
                          f"{axis.rest_freq_hz} Hz ({axis.rest_freq_source})")
    if params.components == 2:
        history.append("two components kept where the BIC drops by > 10; components ordered by centre")
    primary = fits.PrimaryHDU()
    for line in history:
        primary.header["HISTORY"] = line
    hdus: list[Any] = [primary]
    for name, data in full.items():
        for k in range(data.shape[0]):
            header = _header(dataset, params, axis, unit[name])
            for line in history:
                header["HISTORY"] = line
            hdu = fits.ImageHDU(np.asarray(data[k], dtype=">f4"), header=header, name=name.upper())
            hdu.ver = k + 1
            hdus.append(hdu)
    stem = dataset.path.name.split(".fits")[0]
    path = unique_output_path(output_dir, f"{stem}_linefit{params.components}"
                                          f"_ch{params.channel_start}-{params.channel_end}")
    return write_hdulist_atomic(path, hdus, exclusive=True)

"""Several moment maps, and their propagated 1σ maps, from one read of the cube.

``orders: [0, 1, 2, 8]`` reads every y-slab of the cube once and computes all requested maps
(and, with ``uncertainty``, the σ maps of orders 0, 1, 2) from that slab before the next one is
read. The maps are bit-identical to single-order requests. On a local CPU job with numba the compiled
kernels of the single-order path (float64 sums whatever the order set) and the compiled one-pass σ kernel
run on each slab; otherwise: on the CPU the fused reference (NumPy) kernel
sums order 0 (and order 6) in float32 when no order 1-5 is asked with it, but in float64 when one
is, so there orders 0 and 6 each get their own kernel sweep over the slab already in memory (the
other orders share one sweep); the GPU kernel and the CASA kernel compute every order from the
same float64 sums, so one sweep serves all orders. ``save`` writes one multi-extension FITS.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_slabs
from app.errors import InvalidRequest
from app.io.fits_writer import unique_output_path, write_hdulist_atomic
from app.services import moments as mom
from app.services.cube_reads import require_cube
from app.services.encoding import encode_array
from app.services.masking import MaskedSource, MaskRequest, PackedMask, map_over_masked_slabs
from app.services.noise import channel_noise
from app.services.sessions import Dataset
from kernel_common.views import finite_range

#: Orders whose σ maps are defined (both conventions: 0 integral, 1 centroid, 2 variance/dispersion).
SIGMA_ORDERS = (0, 1, 2)


def kernel_groups(orders: tuple[int, ...], convention: str, on_gpu: bool) -> list[tuple[int, ...]]:
    """Orders per kernel sweep of one slab, chosen so every map equals its single-order request.

    The CPU reference kernel's plan depends on the order set: orders 0 and 6 are summed in
    float32 per chunk unless an order 1-5 is asked with them (then float64), and their cancelled
    or overflowing pixels are recomputed exactly; so on the CPU, when orders 1-5 are present or
    0 and 6 are both asked, orders 0 and 6 run alone. Orders 1-5, 8 and 10 (float64 sums, exact
    extrema) share one sweep. The GPU and CASA kernels compute every order independently from
    float64 sums: one sweep.
    """
    if convention == "casa" or on_gpu or len(orders) == 1:
        return [orders]
    alone = {0, 6} if (set(orders) & {1, 2, 3, 4, 5} or {0, 6} <= set(orders)) else set()
    groups = [(o,) for o in orders if o in alone]
    rest = tuple(o for o in orders if o not in alone)
    return groups + ([rest] if rest else [])


def channel_sigma(ctx: JobContext, dataset: Dataset, params: mom.MomentParams) -> tuple[np.ndarray, str]:
    """Noise ``σ_i`` per channel of the range (data unit) and where it came from.

    The request's ``rms`` for every channel when given; else ``1.4826·MAD`` of all finite pixels
    of each channel plane (the whole field: median and MAD ignore emission covering less than
    about half of the plane, so no line-free mask is needed). A channel with fewer than 2
    finite pixels takes the median σ of the other channels.
    """
    n = params.channel_end - params.channel_start + 1
    if params.noise_rms is not None:
        return np.full(n, float(params.noise_rms)), "request"
    est = channel_noise(ctx, dataset, x0=None, x1=None, y0=None, y1=None,
                        z0=params.channel_start, z1=params.channel_end)
    sigma = np.array([np.nan if s is None else s for s in est["sigma"]], dtype=np.float64)
    good = np.isfinite(sigma)
    if not good.any():
        raise InvalidRequest("Cannot estimate the noise: no channel has 2 finite pixels.")
    sigma[~good] = float(np.median(sigma[good]))
    return sigma, "estimated: 1.4826*MAD of all finite pixels per channel"


def compute_maps(
    ctx: JobContext, dataset: Dataset, params: mom.MomentParams, orders: tuple[int, ...], *,
    noise: np.ndarray | None = None, resident=None, mask: PackedMask | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """The maps of ``orders`` (float32 ``(ny, nx)``) and, with ``noise``, the σ maps of orders 0-2.

    One read of each y-slab; every kernel sweep of :func:`kernel_groups` and the σ kernel run on
    that slab. Reference-convention maps go through the physical-range guard; a σ map is NaN
    where its moment map is NaN. With a noise-aware ``mask`` the slabs are blanked outside it.
    """
    source = require_cube(dataset)
    z = slice(params.channel_start, params.channel_end + 1)
    full_axis = mom.axis_of(dataset, params)
    coords, widths = full_axis.coords[z], full_axis.widths[z]
    casa = params.convention == "casa"
    axis = mom.SpectralAxis(coords, widths, full_axis.unit, full_axis.ctype, full_axis.kind)
    if noise is None:  # no σ maps: the single-order path's kernels (compiled on the CPU), all orders in one pass
        raw, _ = mom.compute_moment_maps(ctx, dataset, params, tuple(orders), resident=resident, mask=mask)
        return {k: (np.asarray(raw[k], dtype=np.float32) if casa
                    else mom._guard(k, np.asarray(raw[k], dtype=np.float32), axis)) for k in orders}, {}
    groups = kernel_groups(tuple(orders), params.convention, ctx.on_gpu)
    kern = ctx.kernels("casa_moments") if casa else ctx.kernels("moments")
    # A local CPU job with numba: the compiled kernels on the slab already read -- the maps of the
    # single-order requests' fast path (float64 sums whatever the order set) and the one-pass σ kernel
    local = ctx.cluster is None
    fast_maps = _fast_maps(ctx, casa, orders) if local else None
    errs = (ctx.compiled("moment_errors") if local else None) or ctx.kernels("moment_errors")

    def compute(block: Any) -> dict:
        out: dict[Any, Any] = {}
        if fast_maps is not None:
            out.update(fast_maps(block, coords, widths, params, orders))
        for group in groups if fast_maps is None else ():
            if casa:
                out.update(kern.casa_moment_maps(block, coords, widths, moments=group,
                                                 include=params.include, exclude=params.exclude))
            else:
                out.update(kern.moment_maps(block, coords, widths, orders=group, threshold=params.threshold))
        if errs is not None:
            sig = errs.moment_sigma_maps(block, coords, widths, noise, threshold=None if casa else params.threshold,
                                         include=params.include if casa else None,
                                         exclude=params.exclude if casa else None, dispersion=casa)
            out.update({("sigma", k): v for k, v in sig.items() if k in orders})
        return out

    if mask is not None:
        raw = map_over_masked_slabs(ctx, MaskedSource(source, mask), z, compute)
    else:
        raw = map_over_slabs(ctx, source, z, compute, resident=resident)
    maps: dict[int, np.ndarray] = {}
    for k in orders:
        data = np.asarray(raw[k], dtype=np.float32)
        maps[k] = data if casa else mom._guard(k, data, axis)
    sigmas = {k: np.where(np.isfinite(maps[k]), np.asarray(raw[("sigma", k)], dtype=np.float32), np.float32(np.nan))
              for k in SIGMA_ORDERS if ("sigma", k) in raw}
    return maps, sigmas


def _fast_maps(ctx: JobContext, casa: bool, orders: tuple[int, ...]) -> Any:
    """``f(block, coords, widths, params, orders) -> maps`` with the compiled moment kernels, or None."""
    if casa:
        fast = ctx.compiled("moments_casa")
        if fast is None or not set(orders) <= fast.COMPILED_MOMENTS:
            return None
        return lambda block, v, w, p, o: fast.casa_moment_maps_raw(block, v, w, moments=o, include=p.include,
                                                                   exclude=p.exclude)
    fast = ctx.compiled("moments_ref")
    if fast is None:
        return None
    return lambda block, v, w, p, o: fast.moment_maps_raw(block, v, w, orders=o, threshold=p.threshold)


def _map_entry(params: mom.MomentParams, order: int, data: np.ndarray, sigma: np.ndarray | None, bunit: str,
               unit: str, compression: str) -> dict[str, Any]:
    lo, hi = finite_range(data)
    names = mom.CASA_NAMES if params.convention == "casa" else mom.REFERENCE_NAMES
    entry: dict[str, Any] = {"order": order, "moment_name": names[order], "moment_unit": unit,
                             "range_min": lo, "range_max": hi, "data_base64": encode_array(data, compression),
                             "sigma_base64": None, "sigma_range_min": None, "sigma_range_max": None}
    if sigma is not None:
        slo, shi = finite_range(sigma)
        entry.update(sigma_base64=encode_array(sigma, compression), sigma_range_min=slo, sigma_range_max=shi)
    return entry


def write_multi_fits(output_dir: Path, dataset: Dataset, params: mom.MomentParams, maps: dict[int, np.ndarray],
                     sigmas: dict[int, np.ndarray], units: dict[int, str], axis: mom.SpectralAxis,
                     noise_source: str | None, mask: MaskRequest | None = None) -> Path:
    """One FITS: an empty primary HDU (provenance) and an ImageHDU per order (``EXTNAME = MOM<k>``,
    ``MOMM1`` for CASA's −1) plus ``SIG<k>`` for each σ map, each with the 2-D WCS, BUNIT, HISTORY."""
    hdus: list[Any] = []
    for k, data in maps.items():
        one = mom.MomentParams(**{**params.__dict__, "order": k})
        header = mom.moment_header(dataset, one, units[k], axis, mask)
        tag = f"M{-k}" if k < 0 else str(k)
        hdus.append(fits.ImageHDU(np.asarray(data, dtype=">f4"), header=header, name=f"MOM{tag}"))
        if k in sigmas:
            sh = header.copy()
            sh["HISTORY"] = f"1-sigma propagated error of order {k} (bettermoments, Teague 2019 RNAAS 3 173)"
            sh["HISTORY"] = f"noise {noise_source}"
            hdus.append(fits.ImageHDU(np.asarray(sigmas[k], dtype=">f4"), header=sh, name=f"SIG{tag}"))
    primary = fits.PrimaryHDU()
    primary.header["HISTORY"] = f"visivo-gpu-server moments orders={list(maps)} convention={params.convention}"
    primary.header["HISTORY"] = f"channels={params.channel_start}..{params.channel_end} source={dataset.path.name}"
    primary.header["HISTORY"] = f"created {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
    stem = dataset.path.name.split(".fits")[0]
    ords = "-".join(str(k) for k in maps)
    path = unique_output_path(output_dir, f"{stem}_mom{ords}_{params.convention}"
                                          f"_ch{params.channel_start}-{params.channel_end}")
    return write_hdulist_atomic(path, [primary, *hdus], exclusive=True)


def multi_product(ctx: JobContext, dataset: Dataset, params: mom.MomentParams, *, save: bool, output_dir: Path,
                  compression: str, resident=None, mask: PackedMask | None = None,
                  mask_request: MaskRequest | None = None) -> dict[str, Any]:
    """Response of a multi-order and/or uncertainty request: the first order's fields at the top
    level (as a single-order answer), ``maps`` with every order when ``orders`` was given.
    ``mask`` (built by the caller from ``mask_request``) restricts every map and σ map to its voxels."""
    orders = params.orders or (params.order,)
    noise, source = (channel_sigma(ctx, dataset, params) if params.uncertainty else (None, None))
    maps, sigmas = compute_maps(ctx, dataset, params, orders, noise=noise, resident=resident, mask=mask)
    if not any(np.isfinite(m).any() for m in maps.values()):
        raise InvalidRequest("No valid voxels found for the selected moment parameters.")
    axis = mom.axis_of(dataset, params)
    info = dataset.info
    bunit = info.get("bunit", "")
    units = {k: mom.moment_unit(k, params.convention, bunit, axis.unit) for k in orders}
    entries = [_map_entry(params, k, maps[k], sigmas.get(k), bunit, units[k], compression) for k in orders]
    first = entries[0]
    data = maps[orders[0]]
    z = slice(params.channel_start, params.channel_end + 1)
    body: dict[str, Any] = {
        "width": int(data.shape[1]), "height": int(data.shape[0]), "scalar_type": "float32",
        "order": orders[0], "moment_order": orders[0], "convention": params.convention,
        "moment_name": first["moment_name"], "channel_start": params.channel_start,
        "channel_end": params.channel_end,
        "spectral_range": [float(axis.coords[z].min()), float(axis.coords[z].max())],
        "range_min": first["range_min"], "range_max": first["range_max"],
        "spectral_axis_type": info.get("spectral_axis_type", ""), **axis.describe(),
        "moment_unit": first["moment_unit"], "bunit": bunit,
        "threshold_used": params.threshold, "include": params.include, "exclude": params.exclude,
        "wcs_status": info.get("wcs_status", "ok"), "wcs_warning_message": info.get("wcs_warning_message", ""),
        "computed_on": "gpu" if ctx.on_gpu else "cpu", "compression": compression,
        "data_base64": first["data_base64"], "sigma_base64": first["sigma_base64"],
        "noise_per_channel": None if noise is None else [float(s) for s in noise], "noise_source": source,
    }
    if params.orders is not None:
        body["orders"] = list(orders)
        body["maps"] = entries
    if save:
        body["output_path"] = str(write_multi_fits(output_dir, dataset, params, maps, sigmas, units, axis, source,
                                                   mask_request))
    return body

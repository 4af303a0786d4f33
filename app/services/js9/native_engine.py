"""The five JS9 analysis tasks on our own kernels (NumPy on the CPU, CuPy on the GPU).

Each task reads only the region's bounding box of the requested planes, hands arrays to the
kernel modules of the job's tree (``ctx.kernels(module)``) and shapes the result the
way the API reference (and, for the CASA keys, casatasks) does:

========  ==============================  =====================================================
task      kernels                         result
========  ==============================  =====================================================
imstat    ``stats``                       ``{"DATA": {npts, sum, sumsq, mean, sigma, std, rms, min, max,
                                          minpos, maxpos, median, medabsdevmed, q1, q3, quartile,
                                          blc, trc[, flux, flux_unit]}}``
imfit     ``fit2d``                       ``{"fit": {amplitude, center, major_axis, minor_axis, pa,
                                          background, flux, errors, converged …}, "components": […]}``
imview    ``contours``                    ``{contour_levels, contour_paths, image_shape, data_range}``
specflux  ``region_flux``                 ``{"flux": {"DATA": {mean, sum, npts[, flux]}}, "note"[, spectrum,
                                          total_flux]}``
imval     (plain read)                    ``{values, shape, mask, blc, trc, unit}``
========  ==============================  =====================================================

Pixel conventions: CASA keys (``minpos``, ``maxpos``, ``blc``, ``trc``, ``pixelcoords``) are 0-based
over all FITS axes like casatasks; JS9-facing geometry (``fit.center``, contour ``x``/``y``) is in
1-based JS9 image pixels so a page can draw it directly (``pixel_origin: 1`` in those results).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np

from app.compute.backend import to_host
from app.compute.dispatch import JobContext
from app.errors import InvalidRequest
from app.services.budget import check_budget
from app.services.js9 import params as prm
from app.services.js9.contour_levels import LEVEL_SCALES, log_levels
from app.services.js9.errors import Js9BadRequest
from app.services.js9.images import ImageView, parse_chans, single_plane
from app.services.js9.regions import Region

#: Elements from which imstat cuts the region into row chunks sorted in parallel on the CPU.
PARALLEL_MIN_ELEMENTS = 1 << 21
#: The compiled imstat reads regions spanning at most this many bytes of file (an image, one channel,
#: a modest cube); larger spans (a region across hundreds of channels of a big cube) stay on the NumPy
#: path, whose chunked float32 read keeps the resident set lowest (``tests/test_gzip_memory.py``).
COMPILED_SPAN_BYTES = 256 << 20
#: Row chunks of a large CPU imstat (run on the dispatcher's helper threads, ``ctx.map``).
_WORKERS = max(1, min(8, os.cpu_count() or 1))


@dataclass
class Selection:
    """The planes and the region's bounding box (0-based) a task reads, and the region mask."""

    z: range
    ys: slice
    xs: slice
    mask: np.ndarray | None

    @property
    def zslice(self) -> slice:
        return slice(self.z.start, self.z.stop)

    def read(self, view: ImageView, rows: slice | None = None) -> np.ndarray:
        """``(nz, ny, nx)`` float32 block of the selection (optionally a sub-range of its rows)."""
        ys = self.ys if rows is None else slice(self.ys.start + rows.start, self.ys.start + rows.stop)
        return view.source.read(z=self.zslice, y=ys, x=self.xs)


#: Peak working bytes per selected pixel: imstat (float32 read, sorted copy, float64 sums), specflux
#: and the flux sums (read + mask), imval (Python floats and JSON), imfit/imview (one plane, float64 work).
BYTES_PER_PIXEL = {"imstat": 16.0, "specflux": 8.0, "imval": 100.0, "imfit": 48.0, "imview": 48.0}


def check_memory(sel: Selection, task: str) -> None:
    """Refuse (HTTP 400) a task whose selection passes the per-request memory budget, before reading it."""
    pixels = len(sel.z) * (sel.ys.stop - sel.ys.start) * (sel.xs.stop - sel.xs.start)
    try:
        check_budget(pixels * BYTES_PER_PIXEL[task], f"{task} over {pixels} pixels")
    except InvalidRequest as exc:
        raise Js9BadRequest(exc.message) from None


def select(view: ImageView, region: Region | None, z: range) -> Selection:
    """Bounding box and mask of ``region`` (whole plane without one) over channels ``z``."""
    _, ny, nx = view.shape
    if region is None:
        return Selection(z, slice(0, ny), slice(0, nx), None)
    ys, xs, mask = region.pixel_mask(ny, nx)
    return Selection(z, ys, xs, None if mask.all() else mask)


def _to_device(ctx: JobContext, array: np.ndarray | None) -> Any:
    if array is None or not ctx.on_gpu:
        return array
    import cupy  # noqa: PLC0415  (GPU jobs only)

    return cupy.asarray(array)


def _region_info(region: Region | None) -> dict[str, Any] | None:
    return None if region is None else region.describe()


# -- imstat --------------------------------------------------------------------------------------


def imstat(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """CASA ``imstat`` statistics over the region (whole image without one), blanks excluded."""
    sel = select(view, region, parse_chans(params.get("chans"), view))
    check_memory(sel, "imstat")
    kern = ctx.kernels("stats")
    origin = (sel.z.start, sel.ys.start, sel.xs.start)
    # CPU with numba: one pass over the stored data, then a selection pass (see COMPILED_SPAN_BYTES)
    fast = ctx.compiled("stats") if _file_span(view, sel) <= COMPILED_SPAN_BYTES else None
    if ctx.on_gpu:
        block = _to_device(ctx, sel.read(view))
        stats = kern.stats_finalize(kern.stats_partial(block, _to_device(ctx, sel.mask), origin=origin))
    elif fast is not None:
        raw = view.source.read_raw(z=sel.zslice, y=sel.ys)
        stats = fast.region_stats_raw(raw.data[:, :, sel.xs], sel.mask, origin=origin, bscale=raw.bscale,
                                      bzero=raw.bzero, blank=raw.blank, release=view.source.release)
    else:
        stats = _cpu_stats(ctx, kern, view, sel)
    data: dict[str, Any] = {key: stats[key] for key in (
        "npts", "sum", "sumsq", "mean", "sigma", "rms", "min", "max", "median", "medabsdevmed", "q1", "q3", "quartile")}
    data["std"] = stats["sigma"]
    for key in ("minpos", "maxpos"):
        pos = stats[key]
        data[key] = view.casa_position(*pos) if pos[0] >= 0 else None
    data["blc"] = view.casa_position(sel.z.start, sel.ys.start, sel.xs.start)
    data["trc"] = view.casa_position(sel.z.stop - 1, sel.ys.stop - 1, sel.xs.stop - 1)
    flux = _integrated_flux(ctx, view, sel, stats["sum"], stats.get("channel_sum"))
    if flux is not None:
        data["flux"], data["flux_unit"] = flux
    return {"DATA": data, "region": _region_info(region)}


def _file_span(view: ImageView, sel: Selection) -> int:
    """Bytes of file the selection's planes span (whole planes: a region's rows touch every page of them)."""
    _, ny, nx = view.shape
    return len(sel.z) * ny * nx * view.source.raw.dtype.itemsize


def _cpu_stats(ctx: JobContext, kern: Any, view: ImageView, sel: Selection) -> dict[str, Any]:
    """Row chunks of a large selection are read and sorted in parallel threads, then combined."""
    nrows = sel.ys.stop - sel.ys.start
    size = len(sel.z) * nrows * (sel.xs.stop - sel.xs.start)
    chunks = 1 if size < PARALLEL_MIN_ELEMENTS else min(_WORKERS, nrows)
    bounds = np.linspace(0, nrows, chunks + 1).astype(int)

    def partial(i: int) -> dict[str, Any]:
        rows = slice(int(bounds[i]), int(bounds[i + 1]))
        mask = None if sel.mask is None else sel.mask[rows]
        origin = (sel.z.start, sel.ys.start + rows.start, sel.xs.start)
        return kern.stats_partial(sel.read(view, rows), mask, origin=origin)

    parts = ctx.map(partial, range(chunks))
    return kern.stats_finalize(reduce(kern.stats_combine, parts))


def _integrated_flux(ctx: JobContext, view: ImageView, sel: Selection, total: float,
                     channel_sum: np.ndarray | None = None) -> tuple[float, str] | None:
    """CASA's ``flux``: ``Σx / A_beam`` (Jy) for an image or one channel, else ``Σ_c (Σx)_c / A_beam · |Δv_c|``
    (``channel_sum``: the per-channel sums when the statistics pass already has them)."""
    scale = view.flux_scale()
    if scale is None:
        return None
    factor, unit = scale
    roles = view.image.wcs_info.roles
    if not (roles.spectral and roles.z is not None and view.z_fixed is None and len(sel.z) > 1):
        return total * factor, unit  # an image, or one channel of a cube (as CASA: Jy)
    spec = view.spectral()
    if channel_sum is None:
        kern = ctx.kernels("region_flux")  # the tree of the job's device
        sums, _ = kern.channel_sums(_to_device(ctx, sel.read(view)), _to_device(ctx, sel.mask))
        channel_sum = to_host(sums)
    sums = channel_sum
    widths = spec.widths[sel.z.start : sel.z.stop]
    return float(np.dot(sums, widths)) * factor, f"{unit}.{spec.unit}"


# -- specflux ------------------------------------------------------------------------------------


def specflux(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """Flux over the region per channel (CASA ``specflux``); the single-plane form for an image."""
    sel = select(view, region, parse_chans(params.get("chans"), view))
    check_memory(sel, "specflux")
    kern = ctx.kernels("region_flux")
    sums, counts = kern.channel_sums(_to_device(ctx, sel.read(view)), _to_device(ctx, sel.mask))
    sums, counts = to_host(sums), to_host(counts)
    total, npts = float(sums.sum()), int(counts.sum())
    data: dict[str, Any] = {"mean": total / npts if npts else math.nan, "sum": total, "npts": npts}
    scale = view.flux_scale()
    roles = view.image.wcs_info.roles
    spectral = roles.z is not None and view.z_fixed is None and view.shape[0] > 1
    if not spectral:
        if scale is not None:
            data["flux"], data["flux_unit"] = total * scale[0], scale[1]
        return {"flux": {"DATA": data}, "note": "Spectral flux extraction via imstat", "region": _region_info(region)}
    spec = view.spectral()
    z = np.arange(sel.z.start, sel.z.stop)
    widths = spec.widths[z]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    spectrum: dict[str, Any] = {
        "channel": z.tolist(), "npix": counts.tolist(), "coordinate": spec.coords[z].tolist(),
        "coordinate_unit": spec.unit, "coordinate_kind": spec.kind, "sum": sums.tolist(), "mean": means.tolist(),
    }
    if scale is not None:
        density = sums * scale[0]
        spectrum["flux_density"], spectrum["flux_density_unit"] = density.tolist(), scale[1]
        total_flux, total_unit = float(np.dot(density, widths)), f"{scale[1]}.{spec.unit}"
    else:
        total_flux, total_unit = float(np.dot(sums, widths)), f"{view.bunit or 'unit'}.pixel.{spec.unit}"
    data["flux"], data["flux_unit"] = total_flux, total_unit
    return {
        "flux": {"DATA": data},
        "note": "Per-channel flux over the region (specflux); total = sum over channels of flux x |channel width|",
        "spectrum": spectrum, "total_flux": total_flux, "total_flux_unit": total_unit,
        "region": _region_info(region),
    }


# -- imval ---------------------------------------------------------------------------------------


def imval(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """Pixel values and mask inside ``box`` (CASA's 0-based ``x1,y1,x2,y2``), the region, or at the reference pixel."""
    _, ny, nx = view.shape
    z = parse_chans(params.get("chans"), view)
    box = prm.box_in_image(params, nx, ny)
    if box is not None:
        x1, y1, x2, y2 = box
        sel = Selection(z, slice(y1, y2 + 1), slice(x1, x2 + 1), None)
    elif region is not None:
        sel = select(view, region, z)
    else:
        crpix = view.image.wcs_info.wcs.wcs.crpix
        roles = view.image.wcs_info.roles
        ix = min(max(int(math.floor(crpix[roles.x] - 0.5)), 0), nx - 1)
        iy = min(max(int(math.floor(crpix[roles.y] - 0.5)), 0), ny - 1)
        sel = Selection(z, slice(iy, iy + 1), slice(ix, ix + 1), None)
    check_memory(sel, "imval")
    block = sel.read(view)
    valid = np.isfinite(block)
    if sel.mask is not None:
        valid &= sel.mask[None]
    single_channel = len(z) == 1
    values = block[0] if single_channel else block
    mask = valid[0] if single_channel else valid
    out: dict[str, Any] = {
        "values": [float(v) if math.isfinite(v) else None for v in values.reshape(-1).tolist()],
        "shape": list(values.shape),
        "mask": mask.reshape(-1).tolist(),
        "axes": ["y", "x"] if single_channel else ["channel", "y", "x"],
        "blc": view.casa_position(sel.z.start, sel.ys.start, sel.xs.start),
        "trc": view.casa_position(sel.z.stop - 1, sel.ys.stop - 1, sel.xs.stop - 1),
        "unit": view.bunit,
        "stokes": view.stokes,
        "region": _region_info(region),
    }
    if values.size == 1:
        out["value"] = out["values"][0]
    return out


# -- imview --------------------------------------------------------------------------------------


def imview(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any]) -> dict[str, Any]:
    """Contours of one plane after optional Gaussian smoothing, paths in 1-based JS9 image pixels."""
    plane = single_plane(params.get("chans"), view, "imview")
    _, ny, nx = view.shape
    check_memory(Selection(range(plane, plane + 1), slice(0, ny), slice(0, nx), None), "imview")
    image = view.source.read(z=slice(plane, plane + 1))[0]
    return contours_of_plane(ctx, view, region, params, plane, image)


def contours_of_plane(ctx: JobContext, view: ImageView, region: Region | None, params: dict[str, Any], plane: int,
                      image: np.ndarray) -> dict[str, Any]:
    """The ``imview`` result for a ``(y, x)`` plane already read (by us or by CASA)."""
    n_levels = prm.get_int(params, "n_levels", 10, 1, 100)
    smoothing = prm.get_float(params, "smoothing_sigma", 1.0, 0.0, 100.0)
    explicit = prm.get_levels(params)
    ny, nx = image.shape
    kern = ctx.kernels("contours")
    smoothed = kern.smooth_image(_to_device(ctx, image), sigma=smoothing)
    sel = select(view, region, range(plane, plane + 1))
    work = smoothed[sel.ys, sel.xs]
    if sel.mask is not None:
        work = work.copy()
        work[~_to_device(ctx, sel.mask)] = np.nan
    host = to_host(work)
    scale = prm.get_choice(params, "level_scale", "log", LEVEL_SCALES)
    noise_multiple = prm.get_float(params, "noise_multiple", 3.0, 1e-3, 1e6)
    sigma = None
    if explicit is not None:
        levels, scale = explicit, "explicit"
    else:
        chosen = log_levels(host, n_levels=n_levels, noise_multiple=noise_multiple) if scale == "log" else None
        if chosen is not None:
            levels, sigma = chosen
        else:
            levels, scale = [float(v) for v in to_host(kern.contour_levels(work, n_levels=n_levels))], "linear"
    finite = host[np.isfinite(host)]
    data_range = {"min": float(finite.min()), "max": float(finite.max())} if finite.size else {"min": None, "max": None}
    traced = kern.trace_contours(work, levels=levels) if levels else []
    x_off, y_off = sel.xs.start + 1.0, sel.ys.start + 1.0
    paths = []
    for level, lines in zip(levels, traced, strict=True):
        entry = []
        for line in lines:
            arr = np.asarray(line)
            entry.append({"x": (arr[:, 1] + x_off).tolist(), "y": (arr[:, 0] + y_off).tolist(),
                          "closed": bool(len(arr) > 2 and np.array_equal(arr[0], arr[-1]))})
        paths.append({"level": float(level), "paths": entry})
    return {
        "contour_levels": [float(v) for v in levels], "contour_paths": paths, "image_shape": [ny, nx],
        "data_range": data_range, "smoothing_sigma": smoothing, "plane": plane, "pixel_origin": 1,
        "level_scale": scale, "noise_sigma": sigma, "noise_multiple": noise_multiple if sigma is not None else None,
        "region": _region_info(region),
        "contour_tracing": "cpu (scikit-image marching squares)" if ctx.on_gpu else "cpu",
    }

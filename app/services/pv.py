"""Position–velocity diagrams along a polyline (box sampling across the path, as CARTA does).

The path is sampled at (at most) one-pixel steps; at each sample the mean of the finite
pixels across ``width_pixels`` perpendicular to the path is taken for every channel.
Output rows are channels, columns are positions along the path.

On the Dask lane (CPU jobs), a box of at least ``VISIVO_DASK_MIN_MEGABYTES`` is sampled by the
workers, one channel block per task (each channel is independent: the same numbers as locally).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from astropy.wcs.utils import proj_plane_pixel_scales

from app.compute.backend import to_host
from app.compute.chunking import channel_blocks
from app.compute.dispatch import JobContext
from app.compute.slab_runner import map_over_blocks
from app.errors import InvalidRequest
from app.io.spectral import spectral_axis
from app.services.cube_reads import clamp_range, require_cube
from app.services.encoding import encode_array
from app.services.pv_binning import bin_mean
from app.services.pv_path import PvPath, polyline_samples
from app.services.sessions import Dataset
from kernel_common.views import finite_range


def path_vertices(dataset: Dataset, *, vertices: list | None, points_ra_dec: list | None) -> np.ndarray:
    """Pixel vertices (0-based x, y) from ``vertices`` or, through the celestial WCS, ``points_ra_dec`` (deg)."""
    if vertices:
        arr = np.asarray(vertices, dtype=np.float64)
    elif points_ra_dec:
        world = np.asarray(points_ra_dec, dtype=np.float64)
        if world.ndim != 2 or world.shape[1] != 2:
            raise InvalidRequest("points_ra_dec must be a list of [ra_deg, dec_deg] pairs.")
        celestial = dataset.handle.wcs_info.wcs.celestial
        if celestial.naxis != 2:
            raise InvalidRequest("points_ra_dec needs a celestial WCS; this dataset has none. Send vertices.")
        x, y = celestial.world_to_pixel_values(world[:, 0], world[:, 1])
        arr = np.column_stack([x, y])
    else:
        raise InvalidRequest("A PV path needs 'vertices' (pixels) or 'points_ra_dec' (degrees).")
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.all(np.isfinite(arr)):
        raise InvalidRequest("PV vertices must be finite [x, y] pairs.")
    return arr


def pixel_scale_arcsec(dataset: Dataset) -> float:
    """Mean celestial pixel scale in arcsec (0 when the dataset has no celestial WCS)."""
    celestial = dataset.handle.wcs_info.wcs.celestial
    if celestial.naxis != 2:
        return 0.0
    scales = proj_plane_pixel_scales(celestial) * 3600.0
    return float(np.mean(scales))


def _bbox(path: PvPath, width: int, ny: int, nx: int) -> tuple[slice, slice]:
    half = (width - 1) / 2.0 + 1.0
    x_lo = max(0, math.floor(path.sample_x.min() - half))
    x_hi = min(nx, math.ceil(path.sample_x.max() + half) + 1)
    y_lo = max(0, math.floor(path.sample_y.min() - half))
    y_hi = min(ny, math.ceil(path.sample_y.max() + half) + 1)
    if x_lo >= x_hi or y_lo >= y_hi:
        raise InvalidRequest("The PV path lies entirely outside the image.")
    return slice(y_lo, y_hi), slice(x_lo, x_hi)


def pv_diagram(ctx: JobContext, dataset: Dataset, *, vertices_px: np.ndarray, width_pixels: int,
               compression: str, resident=None, rest_freq_hz: float | None = None,
               velocity_convention: str | None = None, channel_start: int | None = None,
               channel_end: int | None = None, spatial_bin: int = 1, spectral_bin: int = 1) -> dict[str, Any]:
    """Sample the cube along the path; see the module docstring for the rules.

    ``spectral_values`` are in km/s when the axis is a velocity axis or a rest frequency is known
    (``rest_freq_hz`` overrides the header's), else in Hz (or m); ``velocity_convention`` as in
    :func:`app.io.spectral.spectral_axis`. Only channels ``channel_start..channel_end``
    (inclusive, clamped; default all) are read. ``spectral_bin`` consecutive rows and
    ``spatial_bin`` consecutive columns are then averaged (mean of the finite values,
    :func:`app.services.pv_binning.bin_mean`), and so are their coordinates and positions.
    """
    if width_pixels < 1:
        raise InvalidRequest("width_pixels must be >= 1.")
    source = require_cube(dataset)
    nz_full, ny, nx = source.shape
    c0, c1 = clamp_range(channel_start, channel_end, nz_full, "channel")
    nz = c1 - c0 + 1
    try:
        path = polyline_samples(vertices_px)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    kernels = ctx.kernels("pv")
    ys, xs = _bbox(path, width_pixels, ny, nx)
    sx, sy = path.sample_x - xs.start, path.sample_y - ys.start
    cube = resident() if (ctx.on_gpu and resident is not None) else None
    if cube is not None:
        import cupy  # noqa: PLC0415

        box = cupy.ascontiguousarray(cube[c0:c1 + 1, ys, xs])  # the raw kernel needs a C-contiguous box
        data = to_host(kernels.pv_box_sample(box, sx, sy, path.normal_x, path.normal_y,
                                             width_pixels=width_pixels))  # sync
    else:
        plane_bytes = 4 * (ys.stop - ys.start) * (xs.stop - xs.start)
        parts = []
        blocks = channel_blocks(nz, plane_bytes, ctx.chunk_bytes)
        cluster = getattr(ctx, "cluster", None)
        if cluster is not None and not ctx.on_gpu and cluster.worth(plane_bytes * nz):  # a large box: Dask tasks
            reads = [(slice(c0 + zs.start, c0 + zs.stop), ys, xs) for zs in blocks]
            nx_, ny_, w = path.normal_x, path.normal_y, width_pixels
            parts = map_over_blocks(ctx, source, reads, lambda b: kernels.pv_box_sample(
                b, sx, sy, nx_, ny_, width_pixels=w))
            blocks = []
        for i, zs in enumerate(blocks):
            block = source.read(z=slice(c0 + zs.start, c0 + zs.stop), y=ys, x=xs)
            if ctx.on_gpu:
                import cupy  # noqa: PLC0415

                block = cupy.asarray(block)
            parts.append(to_host(kernels.pv_box_sample(block, sx, sy, path.normal_x, path.normal_y,
                                                       width_pixels=width_pixels)))  # sync
            ctx.progress((i + 1) / len(blocks))
        data = np.concatenate(parts, axis=0)
    data = bin_mean(data, (spectral_bin, spatial_bin))
    valid = int(np.count_nonzero(np.isfinite(data)))
    if valid == 0:
        raise InvalidRequest("No valid data found along the PV cut.")
    scale = pixel_scale_arcsec(dataset)
    axis = spectral_axis(dataset.handle.wcs_info, nz_full, rest_freq_hz=rest_freq_hz,
                         velocity_convention=velocity_convention)
    lo, hi = finite_range(data)
    info = dataset.info
    positions = bin_mean(path.positions_px.astype(np.float64), (spatial_bin,)).astype(np.float32)
    coords = bin_mean(np.asarray(axis.coords[c0:c1 + 1], dtype=np.float64), (spectral_bin,))
    rows, cols = data.shape
    return {
        "num_samples": cols, "depth": rows, "rows": rows, "cols": cols,
        "channel_start": c0, "channel_end": c1, "spatial_bin": spatial_bin, "spectral_bin": spectral_bin,
        "scalar_type": "float32", "computed_on": "gpu" if ctx.on_gpu else "cpu",
        "sampling": "box (mean of finite pixels across the path, one-pixel steps)",
        "width_pixels": width_pixels, "vertex_count": path.vertex_count,
        "vertices_px": vertices_px.tolist(),
        "total_length": float(path.total_length_px), "total_length_arcsec": float(path.total_length_px) * scale,
        "valid_samples": valid, "range_min": lo, "range_max": hi,
        "pixel_scale_arcsec_per_pixel": scale, "spatial_unit": "arcsec" if scale else "pixel",
        "spectral_axis_type": info.get("spectral_axis_type", ""), **axis.describe(),
        "spectral_values": coords.tolist(),
        "bunit": info.get("bunit", ""), "beam_major": info.get("beam_major"),
        "beam_minor": info.get("beam_minor"), "beam_pa": info.get("beam_pa"),
        "compression": compression,
        "positions_base64": encode_array(positions, compression),
        "positions_arcsec_base64": encode_array(positions * np.float32(scale), compression),
        "data_base64": encode_array(data, compression),
    }

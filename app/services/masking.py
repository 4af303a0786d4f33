"""Noise-aware masks (smooth and clip, as SoFiA-2's source finder) shared by moments, line width and stacking.

One helper for the three operations: :func:`resolve_mask` validates a request's
:class:`~app.operations.models.MaskSpec` against a dataset into a :class:`MaskPlan` (the kernel
set in pixels and channels; ``plan.key()`` enters the product-cache key), :func:`build_mask`
runs the ``smooth_clip`` kernel over channel blocks of the cube and packs the mask to one bit
per voxel, :class:`MaskedSource` reads slabs with the voxels outside the mask blanked (NaN), so
every kernel that ignores blanks computes over the mask, and :func:`mask_info` answers the mask
(encoded and/or saved as a FITS cube with WCS and HISTORY).

Memory: a channel block holds whole planes plus ``h + dilate`` halo channels on each side
(``h`` = half the widest spectral window), about 40 bytes per voxel of the block, within
``VISIVO_CHUNK_MEGABYTES`` (at least one plane plus the halos); the packed mask is
``nz·ny·⌈nx/8⌉`` bytes. No float64 copy of the cube is made (float64 rows of at most 2²² values
for the medians).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from app.compute.backend import to_host
from app.compute.chunking import y_slabs
from app.compute.dispatch import JobContext
from app.errors import InvalidRequest
from app.io.fits_writer import unique_output_path, write_hdulist_atomic
from app.operations.models import MaskSpec
from app.services.budget import base64_bytes, check_budget, check_response
from app.services.cube_reads import require_cube
from app.services.datasets import beam_of
from app.services.encoding import encode_array
from app.services.sessions import Dataset
from kernel_common.constants import FWHM_PER_SIGMA
from kernel_common.smoothing import WINDOWS, beam_covariance_pixels

#: Working bytes per voxel of a channel block (input, blank-filled copy, spatial and spectral
#: copies, the FFT's complex64 planes, two bool masks).
BYTES_PER_VOXEL = 40.0
MAX_WIDTH = 201
_POPCOUNT = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)


@dataclass(frozen=True)
class MaskPlan:
    """A validated smooth-and-clip mask: kernels in pixels and channels."""

    snr: float
    covariances: tuple[tuple[float, float, float] | None, ...]
    widths: tuple[int, ...]
    window: str
    dilate: int
    spatial: tuple[str, ...]  # how each spatial kernel was defined (HISTORY, answer)

    @property
    def halo(self) -> int:
        """Channels a block needs on each side: half the widest window plus the dilation."""
        return max(self.widths) // 2 + self.dilate

    def key(self) -> dict[str, Any]:
        """Canonical JSON-able form (cache key, answer)."""
        return {"method": "smooth_and_clip", "snr": self.snr,
                "spatial_kernels": [None if c is None else [round(v, 12) for v in c] for c in self.covariances],
                "spatial": list(self.spatial), "spectral_widths": list(self.widths), "window": self.window,
                "dilate_channels": self.dilate}

    def history(self) -> list[str]:
        """FITS HISTORY lines describing the mask."""
        return [f"mask smooth_and_clip snr={self.snr:g} window={self.window} dilate={self.dilate}",
                f"mask spatial kernels: {', '.join(self.spatial)}",
                f"mask spectral widths (channels): {', '.join(str(w) for w in self.widths)}",
                "mask noise: 1.4826*MAD per channel of each smoothed cube; kept where S > snr*noise"]


def _as_list(value: float | list[float], name: str) -> list[float]:
    items = list(value) if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 8:
        raise InvalidRequest(f"mask.{name} takes one value or a list of 1 to 8 values.")
    return items


def _pixel_matrix(dataset: Dataset) -> np.ndarray:
    wcs = dataset.handle.wcs_info.wcs
    cel = wcs.celestial
    if cel.naxis != 2:
        raise InvalidRequest("mask: spatial smoothing needs a celestial WCS (two sky axes); set "
                             "spatial_smooth_beams to 0.")
    matrix = np.asarray(cel.pixel_scale_matrix, dtype=np.float64)
    if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) == 0:
        raise InvalidRequest("mask: the celestial WCS has no usable pixel scale.")
    return matrix


def resolve_mask(dataset: Dataset, spec: MaskSpec | None) -> MaskPlan | None:
    """Validate ``spec`` for ``dataset``: the kernel set ({0} ∪ spatial) × ({1} ∪ spectral).

    A spatial kernel of ``b`` beams is the Gaussian of FWHMs ``b·BMAJ`` and ``b·BMIN`` at ``BPA``
    (header, degrees), turned into pixels through the celestial pixel-scale matrix; without a
    beam in the header the request must give ``spatial_smooth_pixels`` (a circular FWHM in pixels)
    or no spatial smoothing (``spatial_smooth_beams: 0``).
    """
    if spec is None:
        return None
    if spec.method != "smooth_and_clip":
        raise InvalidRequest(f"mask.method must be 'smooth_and_clip' (got '{spec.method}').")
    if spec.spectral_window not in WINDOWS:
        raise InvalidRequest(f"mask.spectral_window must be one of {', '.join(WINDOWS)}.")
    widths = [1]
    for w in _as_list(spec.spectral_smooth_channels, "spectral_smooth_channels"):
        if int(w) != w or w < 1 or w % 2 == 0 or w > MAX_WIDTH:
            raise InvalidRequest(f"mask.spectral_smooth_channels must be odd integers 1..{MAX_WIDTH} (got {w}).")
        widths.append(int(w))
    covariances: list[tuple[float, float, float] | None] = [None]
    spatial = ["none"]
    if spec.spatial_smooth_pixels is not None:
        s2 = (spec.spatial_smooth_pixels / FWHM_PER_SIGMA) ** 2
        covariances.append((s2, 0.0, s2))
        spatial.append(f"circular FWHM {spec.spatial_smooth_pixels:g} px")
    else:
        beams = [float(b) for b in _as_list(spec.spatial_smooth_beams, "spatial_smooth_beams")]
        if any(not math.isfinite(b) or b < 0 or b > 20 for b in beams):
            raise InvalidRequest("mask.spatial_smooth_beams must be between 0 and 20 beams.")
        beams = [b for b in beams if b > 0]
        if beams:
            beam = beam_of(dataset.handle.header)
            if not beam["major"] or not beam["minor"] or beam["major"] <= 0 or beam["minor"] <= 0:
                raise InvalidRequest("mask: the cube's header has no beam (BMAJ/BMIN), so spatial_smooth_beams "
                                     "cannot be used; give spatial_smooth_pixels (FWHM in pixels) or set "
                                     "spatial_smooth_beams to 0.")
            matrix = _pixel_matrix(dataset)
            pa = beam["pa"] or 0.0
            for b in beams:
                cov = beam_covariance_pixels(b * beam["major"] / 3600.0, b * beam["minor"] / 3600.0, pa, matrix)
                covariances.append(cov)
                spatial.append(f"{b:g} beam ({b * beam['major']:.4g}x{b * beam['minor']:.4g} arcsec PA {pa:g} deg)")
    return MaskPlan(float(spec.snr), tuple(dict.fromkeys(covariances)), tuple(dict.fromkeys(widths)),
                    spec.spectral_window, int(spec.dilate_channels), tuple(dict.fromkeys(spatial)))


@dataclass
class PackedMask:
    """A mask over channels ``channel_start..channel_end`` of a cube, one bit per voxel (x packed)."""

    bits: np.ndarray  # (nz, ny, ceil(nx/8)) uint8, np.packbits along x
    nx: int
    channel_start: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.bits.shape[0], self.bits.shape[1], self.nx)

    @property
    def channel_end(self) -> int:
        return self.channel_start + self.bits.shape[0] - 1

    def block(self, z: slice, y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        """The bool mask of cube channels ``z`` (absolute, within the mask's range), rows ``y``, columns ``x``."""
        start = 0 if z.start is None else z.start
        stop = self.channel_end + 1 if z.stop is None else z.stop
        if start < self.channel_start or stop > self.channel_end + 1:
            raise ValueError(f"channels {start}..{stop - 1} outside the mask "
                             f"({self.channel_start}..{self.channel_end})")
        rel = slice(start - self.channel_start, stop - self.channel_start)
        return np.unpackbits(self.bits[rel, y], axis=-1, count=self.nx)[..., x].astype(bool)

    def voxels(self) -> int:
        """Voxels in the mask (a popcount of the packed bytes; the padding bits are 0)."""
        return int(_POPCOUNT[self.bits].sum(dtype=np.int64))


class MaskedSource:
    """A cube reader whose blocks are NaN outside the mask (only channels within the mask's range)."""

    def __init__(self, source: Any, mask: PackedMask) -> None:
        self.source = source
        self.mask = mask
        self.shape = source.shape

    def read(self, z: slice = slice(None), y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        block = self.source.read(z=z, y=y, x=x)
        z0, z1, _ = z.indices(self.shape[0])
        keep = self.mask.block(slice(z0, z1), y, x)
        return np.where(keep, block, np.float32(np.nan)).astype(np.float32, copy=False)


def build_mask(ctx: JobContext, dataset: Dataset, plan: MaskPlan, channel_start: int, channel_end: int) -> PackedMask:
    """The smooth-and-clip mask of channels ``channel_start..channel_end`` (inclusive).

    Channel blocks of whole planes are read with ``plan.halo`` channels of the cube on each side
    (beyond the range where the cube has them; zero padding at the cube's ends), so each channel's
    smoothing, noise, clip and dilation equal a whole-cube run; the interior is packed.
    """
    source = require_cube(dataset)
    nz, ny, nx = source.shape
    halo = plan.halo
    plane = ny * nx * BYTES_PER_VOXEL
    n = channel_end - channel_start + 1
    packed = n * ny * ((nx + 7) // 8)  # the mask itself, one bit per voxel, held for the request
    check_budget(plane * (1 + 2 * halo) + packed, f"Noise-aware mask of {nx}×{ny}×{n} voxels")
    per_block = max(1, int(ctx.chunk_bytes // plane) - 2 * halo)
    kernels = ctx.kernels("smooth_clip")
    bits = np.zeros((n, ny, (nx + 7) // 8), dtype=np.uint8)
    for z0 in range(channel_start, channel_end + 1, per_block):
        ctx.check_cancelled()
        z1 = min(channel_end + 1, z0 + per_block)
        r0, r1 = max(0, z0 - halo), min(nz, z1 + halo)
        block = source.read(z=slice(r0, r1))
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            block = cupy.asarray(block)
        mask, _ = kernels.smooth_clip_mask(block, covariances=plan.covariances, widths=plan.widths, snr=plan.snr,
                                           window=plan.window, dilate=plan.dilate)
        inner = np.asarray(to_host(mask[z0 - r0:z1 - r0]), dtype=bool)  # sync
        bits[z0 - channel_start:z1 - channel_start] = np.packbits(inner, axis=-1)
    return PackedMask(bits, nx, channel_start)


def map_over_masked_slabs(ctx: JobContext, source: MaskedSource, z: slice, compute: Callable[..., dict],
                          *, rows: slice | None = None, bytes_per_voxel: float = 16.0,
                          with_mask: bool = False) -> dict[Any, np.ndarray]:
    """``compute`` on every y-slab of the masked cube (voxels outside the mask are NaN), maps assembled.

    The local slab loop of :func:`app.compute.slab_runner.map_over_slabs` (masked requests stream
    slabs on the GPU and run in the server process, not on the Dask lane). With ``with_mask``,
    ``compute(block, keep)`` gets the unmasked block and the bool mask of the slab instead.
    """
    nz = len(range(*z.indices(source.shape[0])))
    _, ny_full, nx = source.shape
    y0, y1, _ = (rows or slice(None)).indices(ny_full)
    slabs = y_slabs((nz, y1 - y0, nx), ctx.chunk_bytes, bytes_per_voxel=bytes_per_voxel)
    out: dict[Any, np.ndarray] = {}
    for i, ys in enumerate(slabs):
        ctx.check_cancelled()
        rows_i = slice(y0 + ys.start, y0 + ys.stop)
        if with_mask:
            block = source.source.read(z=z, y=rows_i)
            keep = source.mask.block(slice(*z.indices(source.shape[0])[:2]), rows_i)
        else:
            block, keep = source.read(z=z, y=rows_i), None
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            block = cupy.asarray(block)
            keep = None if keep is None else cupy.asarray(keep)
        for key, part in (compute(block, keep) if with_mask else compute(block)).items():
            host = to_host(part)  # sync
            if key not in out:
                out[key] = np.empty((y1 - y0, nx) + host.shape[2:], dtype=host.dtype)
            out[key][ys] = host
        ctx.progress((i + 1) / len(slabs))
    return out


def mask_header(dataset: Dataset, plan: MaskPlan, mask: PackedMask) -> fits.Header:
    """3-D WCS of the cube (spectral reference pixel shifted to the mask's first channel), HISTORY."""
    info = dataset.handle.wcs_info
    axes = [a for a in (info.roles.x, info.roles.y, info.roles.z) if a is not None]
    wcs = info.wcs.sub([a + 1 for a in axes])
    if len(axes) == 3:
        wcs = wcs.slice((slice(mask.channel_start, mask.channel_end + 1), slice(None), slice(None)))
    header = wcs.to_header()
    for key in ("OBJECT", "TELESCOP", "BMAJ", "BMIN", "BPA", "RESTFRQ"):
        if key in dataset.handle.header:
            header[key] = dataset.handle.header[key]
    header["BUNIT"] = ("", "mask: 1 = kept, 0 = rejected")
    header["HISTORY"] = f"visivo-gpu-server noise-aware mask of {dataset.path.name}"
    header["HISTORY"] = f"channels {mask.channel_start}..{mask.channel_end}"
    for line in plan.history():
        header["HISTORY"] = line
    header["HISTORY"] = f"created {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}"
    return header


def mask_info(dataset: Dataset, plan: MaskPlan, mask: PackedMask, *, return_mask: bool, save_mask: bool,
              output_dir: Path | None, compression: str = "none") -> dict[str, Any]:
    """The ``masks[i]`` entry of an answer: counts, and the mask itself when asked (encoded, saved)."""
    nz, ny, nx = mask.shape
    total = nz * ny * nx
    voxels = mask.voxels()
    entry: dict[str, Any] = {"dataset_id": dataset.dataset_id, "shape": [nz, ny, nx],
                             "channel_start": mask.channel_start, "channel_end": mask.channel_end,
                             "voxels": voxels, "fraction": voxels / total if total else 0.0,
                             "spec": plan.key(), "compression": compression, "data_base64": None, "output_path": None}
    if return_mask:
        check_response(base64_bytes(total), "Mask (uint8 voxels)")
        entry["data_base64"] = encode_array(np.unpackbits(mask.bits, axis=-1, count=nx), compression, dtype="u1")
    if save_mask and output_dir is not None:
        stem = dataset.path.name.split(".fits")[0]
        path = unique_output_path(output_dir, f"{stem}_mask_ch{mask.channel_start}-{mask.channel_end}")
        entry["output_path"] = str(_write_mask(path, mask, mask_header(dataset, plan, mask)))
    return entry


def _write_mask(path: Path, mask: PackedMask, header: fits.Header) -> Path:
    """The mask as a BITPIX 8 FITS cube (0/1), written to a temporary file and committed exclusively."""
    data = np.unpackbits(mask.bits, axis=-1, count=mask.nx)
    return write_hdulist_atomic(path, [fits.PrimaryHDU(data=data, header=header)], exclusive=True)


@dataclass(frozen=True)
class MaskRequest:
    """A request's mask: the validated plan and what to do with the mask besides applying it."""

    plan: MaskPlan
    return_mask: bool = False
    save_mask: bool = False

    def key(self) -> dict[str, Any]:
        """Canonical JSON-able form for the product-cache key."""
        return {**self.plan.key(), "return_mask": self.return_mask, "save_mask": self.save_mask}


def mask_request(dataset: Dataset, body: Any) -> MaskRequest | None:
    """The mask of a request with :class:`~app.operations.models.MaskOptions` fields, validated for ``dataset``."""
    plan = resolve_mask(dataset, body.mask)
    if plan is None:
        if body.return_mask or body.save_mask:
            raise InvalidRequest("return_mask and save_mask need a 'mask' specification.")
        return None
    return MaskRequest(plan, bool(body.return_mask), bool(body.save_mask))


def apply_mask(ctx: JobContext, dataset: Dataset, request: MaskRequest, channel_start: int, channel_end: int, *,
               output_dir: Path | None, compression: str = "none") -> tuple[PackedMask, dict[str, Any]]:
    """Build the mask of the inclusive channel range and its ``masks[i]`` answer entry.

    Raises :class:`~app.errors.InvalidRequest` when nothing passes the clip (an empty mask).
    """
    mask = build_mask(ctx, dataset, request.plan, channel_start, channel_end)
    if mask.voxels() == 0:
        raise InvalidRequest(f"The noise-aware mask of {dataset.dataset_id} is empty: no voxel exceeds "
                             f"snr={request.plan.snr:g} times the noise of any smoothed cube (lower mask.snr).")
    return mask, mask_info(dataset, request.plan, mask, return_mask=request.return_mask,
                           save_mask=request.save_mask, output_dir=output_dir, compression=compression)

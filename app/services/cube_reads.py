"""Interactive cube reads: strided preview, single slices and inclusive sub-volumes.

These are I/O-bound reads of the memmap (no arithmetic beyond the byte-order/BLANK
normalisation), so they run on the interactive CPU pool on both backends; the data
range is :func:`finite_range` of the returned array.

Size limits (:mod:`app.services.budget`), checked before reading: the ``data_base64`` payload
(``4·ceil(4·voxels/3)`` bytes) must fit ``VISIVO_MAX_RESPONSE_MB`` and
:data:`ANSWER_BYTES_PER_VOXEL` per voxel the per-request memory budget.
"""

from __future__ import annotations

import math
from typing import Any

from app.errors import InvalidRequest
from app.io.fits_reader import CubeSource
from app.services import budget
from app.services.budget import base64_bytes
from app.services.encoding import encode_array
from app.services.sessions import Dataset
from kernel_common.views import finite_range

#: Peak bytes per float32 voxel of an array answer: the array (4), its base64 text (5.3) and the
#: JSON rendering's two copies of that text (10.7).
ANSWER_BYTES_PER_VOXEL = 20


def require_cube(dataset: Dataset) -> CubeSource:
    """The block reader of a FITS image or cube dataset (a catalogue/VBT is refused)."""
    source = getattr(dataset.handle, "source", None)
    if not isinstance(source, CubeSource):
        raise InvalidRequest(f"Dataset {dataset.dataset_id} is a {dataset.kind}, not an image or cube.")
    return source


def clamp_range(lo: int | None, hi: int | None, n: int, what: str) -> tuple[int, int]:
    """Inclusive bounds clamped into ``[0, n-1]`` (missing ends mean the full extent).

    Raises
    ------
    InvalidRequest
        When ``lo > hi`` after clamping.
    """
    a = 0 if lo is None else min(max(int(lo), 0), n - 1)
    b = n - 1 if hi is None else min(max(int(hi), 0), n - 1)
    if a > b:
        raise InvalidRequest(f"Invalid {what} range: {lo}..{hi} (inclusive bounds, axis length {n}).")
    return a, b


def _payload_bytes(shape: tuple[int, ...]) -> int:
    """base64 length of a float32 array of ``shape`` (the ``data_base64`` text)."""
    return base64_bytes(4 * math.prod(shape))


def auto_downsample(shape: tuple[int, int, int], target_bytes: int) -> int:
    """The smallest step ``s >= 1`` whose preview ``ceil(n/s)`` per axis has a payload within ``target_bytes``."""
    s = 1
    while s < max(shape) and _payload_bytes(tuple(-(-n // s) for n in shape)) > target_bytes:
        s += 1
    return s


def preview(dataset: Dataset, *, downsample: int | None, compression: str) -> dict[str, Any]:
    """``cube[::s, ::s, ::s]``: each dimension becomes ``ceil(n/s)``.

    Without ``downsample`` the step is :func:`auto_downsample` for a payload within a quarter of
    ``VISIVO_MAX_RESPONSE_MB`` (``downsample_auto: true``); an explicit step whose payload passes
    the response limit is refused.
    """
    if downsample is not None and downsample < 1:
        raise InvalidRequest("downsample must be >= 1.")
    source = require_cube(dataset)
    auto = downsample is None
    if downsample is None:
        downsample = auto_downsample(source.shape, budget.current().preview_target_bytes)
    dims = tuple(-(-n // downsample) for n in source.shape)
    what = f"Cube preview of {'×'.join(map(str, dims[::-1]))} voxels (downsample {downsample})"
    budget.check_response(_payload_bytes(dims), what)
    budget.check_budget(ANSWER_BYTES_PER_VOXEL * math.prod(dims), what)
    step = slice(None, None, downsample)
    data = source.read(z=step, y=step, x=step)  # reads only the planes it keeps
    lo, hi = finite_range(data)
    depth, height, width = data.shape
    return {
        "width": width, "height": height, "depth": depth, "downsample": downsample, "downsample_auto": auto,
        "scalar_type": "float32", "range_min": lo, "range_max": hi,
        "compression": compression, "data_base64": encode_array(data, compression),
    }


def slice_plane(dataset: Dataset, *, axis: str, index: int, compression: str) -> dict[str, Any]:
    """One plane: ``z`` → (y, x); ``y`` → (z, x); ``x`` → (z, y). Out-of-range index is an error."""
    source = require_cube(dataset)
    nz, ny, nx = source.shape
    axis = (axis or "z").lower()
    sizes = {"z": nz, "y": ny, "x": nx}
    if axis not in sizes:
        raise InvalidRequest(f"Unknown slice axis '{axis}'; use x, y or z.")
    if not 0 <= index < sizes[axis]:
        raise InvalidRequest(f"Slice index {index} out of range for axis {axis} (0..{sizes[axis] - 1}).")
    plane_shape = {"z": (ny, nx), "y": (nz, nx), "x": (nz, ny)}[axis]
    what = f"Slice {axis}={index} of {plane_shape[1]}×{plane_shape[0]} pixels"
    budget.check_response(_payload_bytes(plane_shape), what)
    budget.check_budget(ANSWER_BYTES_PER_VOXEL * math.prod(plane_shape), what)
    if axis == "z":
        plane = source.read(z=slice(index, index + 1))[0]
    elif axis == "y":
        plane = source.read(y=slice(index, index + 1))[:, 0, :]
    else:
        plane = source.read(x=slice(index, index + 1))[:, :, 0]
    lo, hi = finite_range(plane)
    height, width = plane.shape
    return {
        "axis": axis, "index": index, "width": width, "height": height, "scalar_type": "float32",
        "range_min": lo, "range_max": hi, "compression": compression,
        "data_base64": encode_array(plane, compression),
    }


def subvolume(dataset: Dataset, *, x0, x1, y0, y1, z0, z1, compression: str) -> dict[str, Any]:
    """Inclusive, clamped bounds on every axis."""
    source = require_cube(dataset)
    nz, ny, nx = source.shape
    xa, xb = clamp_range(x0, x1, nx, "x")
    ya, yb = clamp_range(y0, y1, ny, "y")
    za, zb = clamp_range(z0, z1, nz, "channel")
    dims = (zb - za + 1, yb - ya + 1, xb - xa + 1)
    what = f"Sub-volume of {'×'.join(map(str, dims[::-1]))} voxels"
    budget.check_response(_payload_bytes(dims), what)
    budget.check_budget(ANSWER_BYTES_PER_VOXEL * math.prod(dims), what)
    block = source.read(z=slice(za, zb + 1), y=slice(ya, yb + 1), x=slice(xa, xb + 1))
    lo, hi = finite_range(block)
    return {
        "width": xb - xa + 1, "height": yb - ya + 1, "depth": zb - za + 1,
        "x0": xa, "x1": xb, "y0": ya, "y1": yb, "z0": za, "z1": zb,
        "scalar_type": "float32", "range_min": lo, "range_max": hi,
        "compression": compression, "data_base64": encode_array(block, compression),
    }

"""What the region operations share (region spectra, region noise, region statistics).

A request names its regions either as DS9/CRTF text (``regions``) or as a region file inside the
data roots (``region_file``, resolved like every client path: absolute or relative to the first
root, hidden entries and links leading outside refused). The file's *text* enters the cache key,
so an edited file gives a new answer. Parsing and masking stay in
:func:`app.services.region_spectrum.parse_regions` (astropy-regions, pixel centres inside).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.errors import InvalidRequest
from app.io.paths import confine
from app.services.region_spectrum import MAX_TEXT, RegionMask


def region_text(roots: Sequence[Path], regions: str | None, region_file: str | None) -> str:
    """The region text of a request: ``regions`` itself, or the content of ``region_file``.

    Raises
    ------
    InvalidRequest
        Both or neither given; the file is outside the roots or missing ("not found"), longer
        than ``MAX_TEXT`` characters, or not UTF-8 text.
    """
    if regions is not None and region_file is not None:
        raise InvalidRequest("Give either 'regions' (text) or 'region_file' (a path), not both.")
    if region_file is None:
        return regions or ""
    path = confine(region_file, roots)
    if path.stat().st_size > 4 * MAX_TEXT:
        raise InvalidRequest(f"Region file {path.name} is longer than {MAX_TEXT} characters.")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        raise InvalidRequest(f"Region file {path.name} is not a UTF-8 DS9 or CRTF region file.") from None
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"Region file {path.name} is longer than {MAX_TEXT} characters.")
    return text


def union_box(regions: Sequence[RegionMask]) -> tuple[slice, slice]:
    """The ``(ys, xs)`` bounding box of all the regions (0-based, stop exclusive)."""
    ys = slice(min(r.ys.start for r in regions), max(r.ys.stop for r in regions))
    xs = slice(min(r.xs.start for r in regions), max(r.xs.stop for r in regions))
    return ys, xs


def mask_in_box(region: RegionMask, ys: slice, xs: slice) -> np.ndarray:
    """The region's mask placed in the ``(ys, xs)`` box that contains it (bool, box shape)."""
    out = np.zeros((ys.stop - ys.start, xs.stop - xs.start), dtype=bool)
    out[region.ys.start - ys.start:region.ys.stop - ys.start, region.xs.start - xs.start:region.xs.stop - xs.start] = \
        region.mask
    return out


def describe(index: int, region: RegionMask) -> dict[str, Any]:
    """``index``, ``shape``, ``num_pixels`` and the inclusive 0-based ``bbox`` of one region."""
    return {"index": index, "shape": region.shape, "num_pixels": region.num_pixels,
            "bbox": {"x0": region.xs.start, "x1": region.xs.stop - 1, "y0": region.ys.start, "y1": region.ys.stop - 1}}

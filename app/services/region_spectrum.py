"""Sum and mean spectra inside DS9 / CRTF regions (CARTA's spectral profile), several per call.

Regions are parsed with astropy-regions (``Regions.parse``): DS9 ``image`` coordinates are
1-based and converted, CRTF ``pix`` coordinates are 0-based (CASA's convention), sky regions
(``fk5``/``icrs``/``J2000`` …) go through the dataset's celestial WCS; a CRTF line in world units
needs its ``coord=`` (astropy-regions would read its numbers as pixels: refused). A pixel belongs to a
region when its centre lies inside it (``to_mask(mode="center")``). Per channel ``c``:
``sum_c = Σ I`` over the region's finite pixels (data unit · pixel), ``count_c`` their number,
``mean_c = sum_c / count_c`` (data unit; null where ``count_c = 0``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.compute.backend import to_host
from app.compute.chunking import channel_blocks
from app.compute.dispatch import JobContext
from app.errors import InvalidRequest
from app.io.spectral import spectral_axis
from app.services.cube_reads import require_cube
from app.services.sessions import Dataset

#: Most regions in one request, and the longest region text (characters).
MAX_REGIONS = 64
MAX_TEXT = 100_000


@dataclass(frozen=True)
class RegionMask:
    """One parsed region: its shape name and a boolean mask of its bounding box in the image."""

    shape: str
    ys: slice
    xs: slice
    mask: np.ndarray  # (ys, xs) bool

    @property
    def num_pixels(self) -> int:
        return int(self.mask.sum())


def detect_format(text: str, fmt: str | None) -> str:
    """``ds9`` or ``crtf``: as given, else ``crtf`` when the text starts with ``#CRTF``, else ``ds9``."""
    if fmt is not None:
        name = fmt.strip().lower()
        if name not in ("ds9", "crtf"):
            raise InvalidRequest("format must be 'ds9' or 'crtf'.")
        return name
    return "crtf" if text.lstrip().upper().startswith("#CRTF") else "ds9"


_WORLD_UNIT = re.compile(r"\d\s*(deg|arcsec|arcmin|rad|\")|\d[h:]\d|\d[d]\d", re.IGNORECASE)


def check_crtf_frames(text: str) -> None:
    """Refuse CRTF lines with world coordinates but no ``coord=`` (astropy-regions would read the numbers
    as pixels: ``circle [[230.5deg, 5deg], 3arcsec]`` becomes a pixel circle at x = 230.5)."""
    for number, line in enumerate(text.splitlines(), start=1):
        body = line.split("#", 1)[0].strip()
        framed = body.lower().startswith("global") or "coord=" in body.replace(" ", "").lower()
        if body and not framed and _WORLD_UNIT.search(body.split("]", 1)[0]):
            raise InvalidRequest(f"CRTF line {number} has world coordinates but no 'coord=' (e.g. "
                                     f"', coord=J2000'): astropy-regions would read them as pixels.")


def parse_regions(dataset: Dataset, text: str, fmt: str | None) -> list[RegionMask]:
    """Parse ``text`` into pixel masks of the dataset's image plane (module docstring)."""
    from regions import PixelRegion, Regions  # noqa: PLC0415

    if not text or not text.strip():
        raise InvalidRequest("'regions' must hold at least one DS9 or CRTF region.")
    if len(text) > MAX_TEXT:
        raise InvalidRequest(f"'regions' is longer than {MAX_TEXT} characters.")
    name = detect_format(text, fmt)
    if name == "crtf":
        check_crtf_frames(text)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a line the parser would skip is an error, not a silent gap
            parsed = Regions.parse(text, format=name)
    except Exception as exc:  # noqa: BLE001  (the parser raises many types on bad text)
        raise InvalidRequest(f"Cannot parse the {name} regions: {exc}") from None
    if len(parsed) == 0:
        raise InvalidRequest(f"No region found in the {name} text.")
    if len(parsed) > MAX_REGIONS:
        raise InvalidRequest(f"At most {MAX_REGIONS} regions per request (got {len(parsed)}).")
    _, ny, nx = require_cube(dataset).shape
    celestial = dataset.handle.wcs_info.wcs.celestial
    out: list[RegionMask] = []
    for i, region in enumerate(parsed):
        shape = type(region).__name__.replace("PixelRegion", "").replace("SkyRegion", "").lower()
        if not isinstance(region, PixelRegion):
            if celestial.naxis != 2:
                raise InvalidRequest(f"Region {i} is in sky coordinates but the dataset has no celestial WCS.")
            region = region.to_pixel(celestial)
        try:
            box = region.bounding_box
            if box.shape[0] * box.shape[1] > 4 * ny * nx + 1_000_000:  # to_mask allocates the whole box
                raise InvalidRequest(f"Region {i} ({shape}) is far larger than the image ({box.shape[1]} × "
                                     f"{box.shape[0]} pixels).")
            image = np.asarray(region.to_mask(mode="center").to_image((ny, nx)), dtype=bool)
        except InvalidRequest:
            raise
        except Exception as exc:  # noqa: BLE001  (points, text and lines have no area)
            raise InvalidRequest(f"Region {i} ({shape}) has no area: {exc}") from None
        if image is None or not image.any():
            raise InvalidRequest(f"Region {i} ({shape}) covers no pixel of the image.")
        rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
        ys, xs = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
        out.append(RegionMask(shape, ys, xs, image[ys, xs].copy()))
    return out


def region_spectra(ctx: JobContext, dataset: Dataset, regions: list[RegionMask], *, c0: int, c1: int,
                   rest_freq_hz: float | None = None, velocity_convention: str | None = None) -> dict[str, Any]:
    """Sum, count and mean per channel of every region over channels ``c0..c1`` (inclusive).

    The union bounding box of the regions is read once per channel block; the ``region_flux``
    kernel (``channel_sums``) sums each region's masked box.
    """
    source = require_cube(dataset)
    kernels = ctx.kernels("region_flux")
    ys = slice(min(r.ys.start for r in regions), max(r.ys.stop for r in regions))
    xs = slice(min(r.xs.start for r in regions), max(r.xs.stop for r in regions))
    plane_bytes = 4 * (ys.stop - ys.start) * (xs.stop - xs.start)
    sums: list[list[np.ndarray]] = [[] for _ in regions]
    counts: list[list[np.ndarray]] = [[] for _ in regions]
    blocks = channel_blocks(c1 - c0 + 1, 2 * plane_bytes, ctx.chunk_bytes)
    for i, zs in enumerate(blocks):
        ctx.check_cancelled()
        block = source.read(z=slice(c0 + zs.start, c0 + zs.stop), y=ys, x=xs)
        xp = np
        if ctx.on_gpu:
            import cupy  # noqa: PLC0415

            block, xp = cupy.asarray(block), cupy
        for j, r in enumerate(regions):
            sub = xp.ascontiguousarray(block[:, r.ys.start - ys.start:r.ys.stop - ys.start,
                                             r.xs.start - xs.start:r.xs.stop - xs.start])
            s, n = kernels.channel_sums(sub, r.mask)
            sums[j].append(to_host(s))  # sync
            counts[j].append(to_host(n))
        ctx.progress((i + 1) / len(blocks))
    axis = spectral_axis(dataset.handle.wcs_info, source.shape[0], rest_freq_hz=rest_freq_hz,
                         velocity_convention=velocity_convention)
    spectra = []
    for j, r in enumerate(regions):
        s, n = np.concatenate(sums[j]), np.concatenate(counts[j])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        spectra.append({
            "index": j, "shape": r.shape, "num_pixels": r.num_pixels,
            "bbox": {"x0": r.xs.start, "x1": r.xs.stop - 1, "y0": r.ys.start, "y1": r.ys.stop - 1},
            "sum": [float(v) if n_ > 0 else None for v, n_ in zip(s, n, strict=True)],
            "mean": [float(v) if np.isfinite(v) else None for v in mean],
            "count": [int(v) for v in n],
        })
    info = dataset.info
    return {
        "channel_start": c0, "channel_end": c1, "num_channels": c1 - c0 + 1,
        "spectral_values": axis.coords[c0:c1 + 1].tolist(), **axis.describe(),
        "bunit": info.get("bunit", ""), "spectra": spectra, "computed_on": "gpu" if ctx.on_gpu else "cpu",
    }

"""Which tiles cover a viewport: the HiPS order Aladin Lite would display, and the NESTED cover.

Order choice (Aladin Lite's ``computeNorder``): one tile should span about ``tile_width`` screen
pixels, so the tile's angular size is ``pixsize = 3600 · tile_width · fov / viewport_px`` arcsec;
``nside`` is the smallest power of two with ``12·nside² ≥ ⌊4π sr / pixsize²⌋``;
``order = max(log2 nside, 1)``, forced to 3 when ``fov ≤ 50°`` and the order is ≤ 2 (Aladin's
"not blurry for too long" rule), then kept inside the survey's ``[order_min, order_max]``.

Cover: astropy-healpix's cone search in the survey's frame (galactic surveys are indexed in
galactic coordinates) returns every NESTED pixel that touches the disc; centres and corners are
reported in ICRS whatever the survey frame.
"""

from __future__ import annotations

import math
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy_healpix import HEALPix

from app.errors import InvalidRequest

SKY_AREA_ARCSEC2 = 4.0 * math.pi * (180.0 / math.pi) ** 2 * 3600.0**2
MAX_NSIDE = 2**29
DEFAULT_VIEWPORT_PX = 1024
DEFAULT_MAX_TILES = 10_000


def aladin_nside(tile_arcsec: float) -> int:
    """The ``nside`` Aladin Lite picks for tiles of angular size ``tile_arcsec``."""
    npix = int(SKY_AREA_ARCSEC2 / (tile_arcsec * tile_arcsec)) if tile_arcsec > 0 else MAX_NSIDE
    wanted = math.sqrt(npix / 12.0)
    nside = 1
    while nside < wanted and nside < MAX_NSIDE:
        nside *= 2
    return nside


def aladin_order(fov_deg: float, viewport_px: int, *, tile_width: int, order_min: int, order_max: int) -> int:
    """The order Aladin Lite displays for a field ``fov_deg`` wide on ``viewport_px`` screen pixels.

    Parameters
    ----------
    fov_deg
        Field of view across the largest viewport dimension (degrees).
    viewport_px
        Largest viewport dimension (screen pixels).
    tile_width
        The survey's tile width (pixels; Aladin Lite v2 assumes 512).
    order_min, order_max
        The survey's orders; the result is kept inside them.
    """
    tile_arcsec = 3600.0 * tile_width * fov_deg / max(1, viewport_px)
    order = max(int(round(math.log2(aladin_nside(tile_arcsec)))), 1)
    if fov_deg <= 50.0 and order <= 2:
        order = 3
    return int(min(max(order, order_min), order_max))


def viewport_radius(fov_deg: float, width: int | None = None, height: int | None = None) -> float:
    """Radius (degrees) of the circle around a ``fov_deg``-wide viewport: its half diagonal.

    ``fov_deg`` spans the larger dimension; a square viewport is assumed without pixel sizes.
    """
    aspect = min(width, height) / max(width, height) if width and height else 1.0
    return 0.5 * fov_deg * math.hypot(1.0, aspect)


def _healpix(order: int, frame: str) -> HEALPix:
    return HEALPix(nside=2**order, order="nested", frame=frame)


def estimated_tiles(order: int, radius_deg: float) -> int:
    """Upper estimate of the tiles in a cone (its area over a tile's, plus a ring of border tiles)."""
    npix = 12 * 4**order
    if radius_deg >= 180.0:
        return npix
    fraction = (1.0 - math.cos(math.radians(radius_deg))) / 2.0
    tile_deg = math.degrees(math.sqrt(4.0 * math.pi / npix))
    ring = 2.0 * math.pi * radius_deg / tile_deg + 8
    return int(min(npix, fraction * npix + 2 * ring))


def cover(
    *, ra_deg: float, dec_deg: float, radius_deg: float, order: int, frame: str, max_tiles: int = DEFAULT_MAX_TILES
) -> np.ndarray:
    """Sorted NESTED indices of the order-``order`` tiles touching the cone (all tiles when radius ≥ 180°).

    ``frame`` is the survey's astropy frame name (``icrs``, ``galactic`` ...); the centre is ICRS.
    """
    if not 0 <= order <= 29:
        raise InvalidRequest("HiPS order must be between 0 and 29.")
    if estimated_tiles(order, radius_deg) > max_tiles:
        raise InvalidRequest(
            f"The viewport needs about {estimated_tiles(order, radius_deg)} tiles at order {order} "
            f"(limit {max_tiles}); use a lower order or a smaller field."
        )
    if radius_deg >= 180.0:
        return np.arange(12 * 4**order, dtype=np.int64)
    centre = SkyCoord(ra_deg * u.deg, dec_deg * u.deg, frame="icrs")
    pix = _healpix(order, frame).cone_search_skycoord(centre, radius_deg * u.deg)
    return np.sort(np.asarray(pix, dtype=np.int64))


def tile_geometry(pix: np.ndarray, *, order: int, frame: str) -> list[dict[str, Any]]:
    """Per tile: ``pix``, centre and four corners (north, west, south, east of the tile) in ICRS degrees."""
    if len(pix) == 0:
        return []
    hp = _healpix(order, frame)
    centres = hp.healpix_to_skycoord(pix).icrs
    corners = hp.boundaries_skycoord(pix, step=1).icrs
    c_ra, c_dec = centres.ra.deg, centres.dec.deg
    k_ra, k_dec = corners.ra.deg, corners.dec.deg
    return [
        {
            "pix": int(p),
            "ra": float(c_ra[i]),
            "dec": float(c_dec[i]),
            "corners": [[float(k_ra[i, j]), float(k_dec[i, j])] for j in range(4)],
        }
        for i, p in enumerate(pix)
    ]

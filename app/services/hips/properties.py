"""HiPS ``properties`` files: parsing with the defaults of the IVOA HiPS 1.0 standard.

The file is ``key = value`` lines, ``#`` comments. Keywords of pre-1.0 surveys (``maxOrder``,
``format``, ``coordsys``, ``minOrder``) are read when the 1.0 ones are missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from astropy.coordinates import SkyCoord

from app.errors import InvalidRequest

#: HiPS frame names → astropy frame names.
FRAMES = {"equatorial": "icrs", "galactic": "galactic", "ecliptic": "barycentricmeanecliptic"}
_LEGACY_FRAMES = {"c": "equatorial", "g": "galactic", "e": "ecliptic"}
#: Tile formats in order of preference for display, with their file extension and content type.
TILE_FORMATS = {
    "png": ("png", "image/png"),
    "jpeg": ("jpg", "image/jpeg"),
    "webp": ("webp", "image/webp"),
    "fits": ("fits", "application/fits"),
}
MAX_PROPERTIES_BYTES = 1 << 20
DEFAULT_FOV_DEG = 180.0


@dataclass(frozen=True)
class HipsProperties:
    """The properties a viewer needs, with the raw key/value map.

    Attributes
    ----------
    order_min, order_max
        ``hips_order_min`` (default 0) and ``hips_order`` (required).
    frame
        ``equatorial``, ``galactic`` or ``ecliptic`` (default ``equatorial``).
    tile_formats
        Available formats, most display-friendly first (``png``, ``jpeg``, ``webp``, ``fits``).
    tile_width
        Tile side in pixels (default 512).
    ra_center, dec_center, fov
        Initial view in ICRS degrees (``hips_initial_ra/dec/fov``; default: the frame's origin and 180°).
    """

    order_min: int
    order_max: int
    frame: str
    tile_formats: tuple[str, ...]
    tile_width: int
    ra_center: float
    dec_center: float
    fov: float
    title: str
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def tile_format(self) -> str:
        """The default format served: the first of :attr:`tile_formats`."""
        return self.tile_formats[0]

    @property
    def astropy_frame(self) -> str:
        return FRAMES[self.frame]

    def summary(self) -> dict[str, Any]:
        """The fields of the ``/v1/hips/open`` response."""
        return {
            "order_min": self.order_min,
            "order_max": self.order_max,
            "frame": self.frame,
            "tile_format": self.tile_format,
            "tile_formats": list(self.tile_formats),
            "tile_width": self.tile_width,
            "ra_center": self.ra_center,
            "dec_center": self.dec_center,
            "fov": self.fov,
            "title": self.title,
            "properties": dict(self.raw),
        }


def parse_lines(text: str) -> dict[str, str]:
    """``key = value`` lines into a dict (comments and blank lines skipped; the first value of a key wins)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        values.setdefault(key.strip(), value.strip())
    return values


def _int(values: dict[str, str], keys: tuple[str, ...], default: int | None) -> int | None:
    for key in keys:
        if key in values:
            try:
                return int(values[key])
            except ValueError:
                raise InvalidRequest(f"Malformed HiPS properties: {key} = '{values[key]}' is not an integer.") from None
    return default


def _float(values: dict[str, str], key: str) -> float | None:
    try:
        return float(values[key])
    except (KeyError, ValueError):
        return None


def _frame(values: dict[str, str]) -> str:
    raw = values.get("hips_frame")
    if raw is None and "coordsys" in values:
        raw = _LEGACY_FRAMES.get(values["coordsys"].strip().lower()[:1], values["coordsys"])
    frame = (raw or "equatorial").strip().lower()
    if frame not in FRAMES:
        raise InvalidRequest(f"Malformed HiPS properties: unsupported hips_frame '{raw}'.")
    return frame


def _formats(values: dict[str, str]) -> tuple[str, ...]:
    # Pre-standard surveys without a format keyword were JPEG.
    raw = values.get("hips_tile_format") or values.get("format") or "jpeg"
    words = {w.lower().replace("jpg", "jpeg") for w in raw.replace(",", " ").split()}
    formats = tuple(f for f in TILE_FORMATS if f in words)
    if not formats:
        raise InvalidRequest(f"Malformed HiPS properties: no supported tile format in '{raw}'.")
    return formats


def _initial_view(values: dict[str, str], frame: str) -> tuple[float, float, float]:
    ra, dec = _float(values, "hips_initial_ra"), _float(values, "hips_initial_dec")
    if ra is None or dec is None:
        origin = SkyCoord(0.0, 0.0, unit="deg", frame=FRAMES[frame]).icrs
        ra, dec = float(origin.ra.deg), float(origin.dec.deg)
    fov = _float(values, "hips_initial_fov")
    return ra % 360.0, dec, fov if fov and fov > 0 else DEFAULT_FOV_DEG


def parse_properties(text: str) -> HipsProperties:
    """Parse a ``properties`` file; :class:`~app.errors.InvalidRequest` when it is not a usable HiPS.

    ``hips_order`` (or legacy ``maxOrder``) is required; everything else has a default.
    """
    values = parse_lines(text)
    order_max = _int(values, ("hips_order", "maxOrder"), None)
    if order_max is None:
        raise InvalidRequest("Malformed HiPS properties: hips_order is missing.")
    order_min = _int(values, ("hips_order_min", "minOrder"), 0)
    tile_width = _int(values, ("hips_tile_width", "tileWidth"), 512)
    if not (0 <= order_min <= order_max <= 29) or tile_width is None or tile_width < 1:
        raise InvalidRequest(f"Malformed HiPS properties: orders {order_min}..{order_max}, tile width {tile_width}.")
    frame = _frame(values)
    ra, dec, fov = _initial_view(values, frame)
    title = values.get("obs_title") or values.get("label") or values.get("obs_collection") or ""
    return HipsProperties(
        order_min=int(order_min),
        order_max=int(order_max),
        frame=frame,
        tile_formats=_formats(values),
        tile_width=int(tile_width),
        ra_center=ra,
        dec_center=dec,
        fov=fov,
        title=title,
        raw=values,
    )


def tile_relpath(order: int, pix: int, ext: str) -> str:
    """``NorderK/DirD/NpixN.ext`` with ``D = (N // 10000) * 10000``."""
    return f"Norder{order}/Dir{(pix // 10000) * 10000}/Npix{pix}.{ext}"


def allsky_relpath(order: int, ext: str) -> str:
    return f"Norder{order}/Allsky.{ext}"

"""Open HiPS surveys and serve their tiles, Allsky images and viewport covers.

A survey is an http(s) root URL, a ``file://`` URL or a directory inside the data roots; either
way its ``properties`` file is read first. Surveys get a stable id from their root, so opening the
same survey twice gives the same ``survey_id``. Remote files are fetched with the limits of
:class:`HipsConfig` and cached on disk (``<output_dir>/.hips_cache``, hidden from the file routes).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from app.errors import InvalidRequest, NotFound
from app.io.paths import confine
from app.io.remote import RemoteError, fetch_bytes, make_client
from app.services.hips import allsky, coverage
from app.services.hips.overlay import TableCache
from app.services.hips.properties import (
    MAX_PROPERTIES_BYTES,
    TILE_FORMATS,
    HipsProperties,
    allsky_relpath,
    parse_properties,
    tile_relpath,
)
from app.services.hips.tiles import DiskCache, SurveyTiles

MAX_SURVEYS = 256


def _bad(message: str) -> InvalidRequest:
    """A parameter error on a binary route (HTTP 422, so a client never takes JSON for image bytes)."""
    return InvalidRequest(message, status_code=422)


@dataclass(frozen=True)
class HipsConfig:
    """Limits of the HiPS proxy.

    Attributes
    ----------
    cache_dir
        On-disk cache of remote files and built Allsky images.
    cache_max_bytes
        Bound on the cache's total size.
    timeout
        Seconds for one remote file (connect, read and the whole transfer).
    tile_max_bytes
        Largest file accepted from a survey.
    max_tiles
        Largest cover ``query_tiles`` returns.
    """

    cache_dir: Path
    cache_max_bytes: int = 512 << 20
    timeout: float = 15.0
    tile_max_bytes: int = 8 << 20
    max_tiles: int = coverage.DEFAULT_MAX_TILES

    @classmethod
    def from_settings(cls, settings: Any) -> HipsConfig:
        """Read ``hips_*`` settings when present, defaults otherwise."""
        return cls(
            cache_dir=Path(settings.output_dir) / ".hips_cache",
            cache_max_bytes=int(getattr(settings, "hips_cache_megabytes", 512)) << 20,
            timeout=float(getattr(settings, "hips_timeout_seconds", 15.0)),
            tile_max_bytes=int(getattr(settings, "hips_tile_max_megabytes", 8)) << 20,
            max_tiles=int(getattr(settings, "hips_max_tiles", coverage.DEFAULT_MAX_TILES)),
        )


@dataclass
class Survey:
    """An open survey: its id, root, properties and file access."""

    survey_id: str
    root: str
    properties: HipsProperties
    tiles: SurveyTiles
    build_lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> dict[str, Any]:
        return {
            "survey_id": self.survey_id,
            "url": self.root,
            "remote": self.tiles.is_remote,
            **self.properties.summary(),
        }

    def format_of(self, requested: str | None) -> tuple[str, str, str]:
        """``(format, extension, content type)`` of the requested format, or the survey's default."""
        fmt = (requested or self.properties.tile_format).strip().lower().replace("jpg", "jpeg")
        if fmt not in self.properties.tile_formats:
            offered = ", ".join(self.properties.tile_formats)
            raise _bad(f"Tile format '{requested}' is not offered by this survey ({offered}).")
        ext, content_type = TILE_FORMATS[fmt]
        return fmt, ext, content_type

    def check_order(self, order: int) -> None:
        if not 0 <= order <= self.properties.order_max:
            raise _bad(f"Order {order} is outside the survey's orders 0..{self.properties.order_max}.")


def survey_id_for(kind: str, root: str) -> str:
    return "hips_" + hashlib.sha256(f"{kind}:{root}".encode()).hexdigest()[:12]


class HipsService:
    """Registry of open surveys plus the shared HTTP client and disk cache.

    Parameters
    ----------
    config
        Limits and cache location.
    roots
        Data roots local surveys (and catalogue files) must be inside.
    """

    def __init__(self, config: HipsConfig, roots: Sequence[Path]) -> None:
        self.config = config
        self.roots = tuple(roots)
        self.client = make_client(config.timeout)
        self.cache = DiskCache(config.cache_dir, config.cache_max_bytes)
        self.tables = TableCache()
        self._surveys: OrderedDict[str, Survey] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    # -- opening --------------------------------------------------------------------------
    def _remote(self, url: str) -> Survey:
        base = url.rstrip("/")
        if base.endswith("/properties"):
            base = base[: -len("/properties")]
        sid = survey_id_for("remote", base)
        try:
            response = fetch_bytes(
                self.client, f"{base}/properties", max_bytes=MAX_PROPERTIES_BYTES, total_timeout=self.config.timeout
            )
        except RemoteError as exc:
            raise InvalidRequest(f"HiPS survey unreachable: {exc.message}") from None
        props = parse_properties((response.content or b"").decode("utf-8", "replace"))
        tiles = SurveyTiles(
            sid, self.cache, base_url=base, client=self.client,
            max_bytes=self.config.tile_max_bytes, timeout=self.config.timeout,
        )
        return Survey(sid, base, props, tiles)

    def _local(self, raw_path: str) -> Survey:
        if raw_path.rstrip("/").endswith("/properties"):
            root = confine(raw_path, self.roots).parent  # the properties file itself
        else:
            root = confine(raw_path, self.roots, want_dir=True)
        try:
            prop_path = confine(str(root / "properties"), self.roots)
        except InvalidRequest:
            raise InvalidRequest(f"Not a HiPS survey: no properties file in {root}.") from None
        if prop_path.stat().st_size > MAX_PROPERTIES_BYTES:
            raise InvalidRequest("Malformed HiPS properties: the file is too large.")
        props = parse_properties(prop_path.read_text("utf-8", errors="replace"))
        sid = survey_id_for("local", str(root))
        tiles = SurveyTiles(sid, self.cache, local_root=root, roots=self.roots, max_bytes=self.config.tile_max_bytes)
        return Survey(sid, str(root), props, tiles)

    def open(self, url: str) -> Survey:
        """Open (or re-open) a survey from an http(s) URL, a ``file://`` URL or a local directory."""
        text = (url or "").strip()
        if not text:
            raise InvalidRequest("A HiPS survey URL or directory is required.")
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in ("http", "https"):
            survey = self._remote(text)
        elif scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InvalidRequest("file:// URLs must name a local path.")
            survey = self._local(url2pathname(parts.path))
        elif "://" in text:
            raise InvalidRequest(f"Unsupported HiPS URL scheme '{scheme}' (http, https, file or a local path).")
        else:
            survey = self._local(text)
        with self._lock:
            existing = self._surveys.pop(survey.survey_id, None)
            if existing is not None:
                survey.tiles = existing.tiles  # keep the remembered 404s
            self._surveys[survey.survey_id] = survey
            while len(self._surveys) > MAX_SURVEYS:
                self._surveys.popitem(last=False)
        return survey

    def survey(self, survey_id: str) -> Survey:
        with self._lock:
            survey = self._surveys.get(survey_id)
        if survey is None:
            raise NotFound(f"HiPS survey not found: {survey_id}")
        return survey

    # -- files ----------------------------------------------------------------------------
    def tile(self, survey_id: str, order: int, pix: int, fmt: str | None = None) -> tuple[bytes, str]:
        """The bytes and content type of tile ``(order, pix)``; 404 when the survey has none."""
        survey = self.survey(survey_id)
        survey.check_order(order)
        if not 0 <= pix < 12 * 4**order:
            raise _bad(f"Pixel {pix} is outside 0..{12 * 4**order - 1} at order {order}.")
        _, ext, content_type = survey.format_of(fmt)
        relpath = tile_relpath(order, pix, ext)
        data = survey.tiles.get(relpath, check_ext=ext)
        if data is None:
            raise NotFound(f"Tile not found: {relpath}")
        return data, content_type

    def allsky(self, survey_id: str, order: int = 3, fmt: str | None = None) -> tuple[bytes, str, bool]:
        """The survey's ``Allsky`` image of ``order``, built from its tiles when the survey has none.

        Returns
        -------
        tuple
            ``(bytes, content type, built)``; ``built`` is true when this server assembled it.
        """
        survey = self.survey(survey_id)
        survey.check_order(order)
        fmt, ext, content_type = survey.format_of(fmt)
        relpath = allsky_relpath(order, ext)
        data = survey.tiles.get(relpath, check_ext=ext)
        if data is not None:
            return data, content_type, False
        with survey.build_lock:
            data = survey.tiles.get_derived(relpath)
            if data is None:
                data = allsky.build_allsky(
                    lambda pix: survey.tiles.get(tile_relpath(order, pix, ext), check_ext=ext),
                    order=order, fmt=fmt, tile_width=survey.properties.tile_width,
                )
                survey.tiles.put_derived(relpath, data)
        return data, content_type, True

    # -- viewports ------------------------------------------------------------------------
    def query_tiles(
        self,
        survey_id: str,
        *,
        ra_deg: float,
        dec_deg: float,
        fov_deg: float,
        radius_deg: float | None = None,
        width: int | None = None,
        height: int | None = None,
        order: int | None = None,
    ) -> dict[str, Any]:
        """The order and NESTED tiles covering a viewport (centre in ICRS degrees)."""
        survey = self.survey(survey_id)
        props = survey.properties
        if not -90.0 <= dec_deg <= 90.0:
            raise InvalidRequest("dec must be between -90 and 90 degrees.")
        if not fov_deg > 0.0:  # also refuses NaN
            raise InvalidRequest("fov_deg must be positive.")
        fov = min(fov_deg, 360.0)
        radius = radius_deg if radius_deg is not None else coverage.viewport_radius(fov, width, height)
        if radius <= 0:
            raise InvalidRequest("radius_deg must be positive.")
        viewport_px = max(width or 0, height or 0) or coverage.DEFAULT_VIEWPORT_PX
        if order is None:
            order = coverage.aladin_order(
                fov, viewport_px, tile_width=props.tile_width, order_min=props.order_min, order_max=props.order_max
            )
        else:
            survey.check_order(order)
        pix = coverage.cover(
            ra_deg=ra_deg % 360.0, dec_deg=dec_deg, radius_deg=radius, order=order,
            frame=props.astropy_frame, max_tiles=self.config.max_tiles,
        )
        tiles = coverage.tile_geometry(pix, order=order, frame=props.astropy_frame)
        for tile in tiles:
            tile["order"] = order
            tile["url"] = f"/v1/hips/{survey_id}/tile/{order}/{tile['pix']}"
        return {
            "survey_id": survey_id,
            "order": order,
            "nside": 2**order,
            "frame": props.frame,
            "coordinate_frame_of_positions": "icrs",
            "ra_center": ra_deg % 360.0,
            "dec_center": dec_deg,
            "fov_deg": fov,
            "radius_deg": radius,
            "viewport_px": viewport_px,
            "tile_format": props.tile_format,
            "n_tiles": len(tiles),
            "pixels": [int(p) for p in pix],
            "tiles": tiles,
        }

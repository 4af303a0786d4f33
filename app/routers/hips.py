"""HiPS routes: open a survey, proxy its tiles and Allsky images, cover a viewport, overlay a catalogue.

Tile and Allsky routes answer raw bytes with the format's content type; their parameter errors are
HTTP 422 and a missing tile HTTP 404 (both with the usual ``{"valid": false, "error"}`` body), so a
client never mistakes an error for image bytes. Routes are plain ``def``: remote fetches block a
worker thread of the server's pool, never the event loop nor the compute pools.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.deps import HipsDep, get_runtime, session_id_of
from app.errors import InvalidRequest
from app.io.paths import confine
from app.operations.http import STANDARD_ERRORS, respond
from app.operations.models import Envelope
from app.responses import ok
from app.services.hips import allsky, coverage, overlay
from app.services.hips.properties import TILE_FORMATS

router = APIRouter(prefix="/v1/hips", tags=["hips"], responses=STANDARD_ERRORS)


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


def _bytes_answer(what: str, headers: dict[str, str]) -> dict[int | str, dict[str, Any]]:
    """The documented 200 of a byte route: every tile format's media type, and its headers."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {200: {
        "description": what,
        "content": {media: binary for _, media in TILE_FORMATS.values()},
        "headers": {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()},
    }, 404: {**STANDARD_ERRORS[404], "description": "Unknown survey, or the survey has no such tile."},
        422: {**STANDARD_ERRORS[422], "description": "Order, pixel or format out of the survey's range."}}


CACHE_HEADER = {"Cache-Control": "`max-age=3600`."}


# -- requests -------------------------------------------------------------------------------
class OpenRequest(BaseModel):
    """A HiPS survey root."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"url": "http://alasky.u-strasbg.fr/DSS/DSS2Merged"}]})
    url: str = Field(validation_alias=_alias("url", "path", "root"),
                     description="http(s) root, `file://` URL, or a directory inside the data roots "
                                 "(aliases `path`, `root`).")


class Viewport(BaseModel):
    """A viewport: centre (ICRS degrees), field of view, optional radius, viewport pixels or order."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"ra": 187.2779, "dec": 2.0524, "fov_deg": 1.5, "width": 1024, "height": 768}]})
    ra: float = Field(validation_alias=_alias("ra", "ra_deg", "ra_center", "center_ra"),
                      description="Centre right ascension, ICRS (degrees; aliases `ra_deg`, `ra_center`, `center_ra`).")
    dec: float = Field(validation_alias=_alias("dec", "dec_deg", "dec_center", "center_dec"),
                       description="Centre declination, ICRS (degrees, −90–90; aliases `dec_deg`, `dec_center`, "
                                   "`center_dec`).")
    fov_deg: float | None = Field(None, validation_alias=_alias("fov_deg", "fov"),
                                  description="Field of view across the viewport (degrees, > 0; alias `fov`).")
    radius_deg: float | None = Field(None, validation_alias=_alias("radius_deg", "radius"),
                                     description="Cone radius (degrees; default: the viewport's half-diagonal).")
    width: int | None = Field(None, ge=1, validation_alias=_alias("width", "viewport_width", "width_px"),
                              description="Viewport width (screen pixels).")
    height: int | None = Field(None, ge=1, validation_alias=_alias("height", "viewport_height", "height_px"),
                               description="Viewport height (screen pixels).")
    viewport_px: int | None = Field(None, ge=1, description="Viewport size when width/height are not given "
                                                            "(screen pixels; default 1024).")
    order: int | None = Field(None, validation_alias=_alias("order", "norder"),
                              description="HEALPix order to use (default: the order Aladin Lite would show).")

    def largest_px(self) -> int | None:
        sizes = [v for v in (self.width, self.height, self.viewport_px) if v]
        return max(sizes) if sizes else None


class OverlayRequest(Viewport):
    """A viewport and a catalogue: a file in the data roots (`path`) or an open catalogue (`dataset_id`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"path": "catalogue_sky.csv", "ra": 230.5, "dec": 5.0, "radius_deg": 0.5, "max_rows": 1000}]})
    path: str | None = Field(None, validation_alias=_alias("path", "catalogue_path", "catalogue"),
                             description="Catalogue file (CSV, VOTable, FITS table …) inside the data roots.")
    dataset_id: str | None = Field(None, description="An open catalogue dataset of the caller's session instead.")
    max_rows: int = Field(1000, validation_alias=_alias("max_rows", "max_sources", "limit"),
                          description="Most sources returned, nearest first (1–100 000).")
    ra_column: str | None = Field(None, description="RA column (degrees; default: detected by name).")
    dec_column: str | None = Field(None, description="Dec column (degrees; default: detected by name).")
    name_column: str | None = Field(None, description="Name column (default: detected by name).")


# -- answers --------------------------------------------------------------------------------
class SurveySummary(Envelope):
    """An opened survey: its id and the properties a viewer needs."""

    survey_id: str = Field(description="Id for the tile, Allsky and query_tiles routes.")
    url: str = Field(description="The survey root (URL or resolved directory).")
    remote: bool = Field(description="Tiles are fetched over HTTP (and cached on disk).")
    order_min: int = Field(description="Lowest HEALPix order with tiles.")
    order_max: int = Field(description="Highest HEALPix order with tiles.")
    frame: str = Field(description="HiPS frame: `equatorial`, `galactic` or `ecliptic`.")
    tile_format: str = Field(description="Format served by default (`png`, `jpeg`, `webp`, `fits`).")
    tile_formats: list[str] = Field(description="Formats the survey offers, most display-friendly first.")
    tile_width: int = Field(description="Tile side (pixels).")
    ra_center: float = Field(description="Initial view centre RA, ICRS (degrees).")
    dec_center: float = Field(description="Initial view centre Dec, ICRS (degrees).")
    fov: float = Field(description="Initial field of view (degrees).")
    title: str = Field(description="Survey title.")
    properties: dict[str, str] = Field(description="Every `key = value` of the survey's `properties` file.")


class TileInfo(BaseModel):
    """One HEALPix tile covering the viewport."""

    pix: int = Field(description="NESTED pixel index at `order`.")
    order: int = Field(description="HEALPix order.")
    ra: float = Field(description="Tile centre RA, ICRS (degrees).")
    dec: float = Field(description="Tile centre Dec, ICRS (degrees).")
    corners: list[list[float]] = Field(description="Four `[ra, dec]` corners, ICRS (degrees): N, W, S, E.")
    url: str = Field(description="Path of the tile route for this tile.")


class TileCoverage(Envelope):
    """The order and the NESTED tiles covering a viewport."""

    survey_id: str = Field(description="The survey.")
    order: int = Field(description="HEALPix order chosen (or requested).")
    nside: int = Field(description="2^order.")
    frame: str = Field(description="The survey's HiPS frame (tiles are indexed in it).")
    coordinate_frame_of_positions: str = Field(description="Frame of every position in the answer: `icrs`.")
    ra_center: float = Field(description="Viewport centre RA, ICRS (degrees, 0–360).")
    dec_center: float = Field(description="Viewport centre Dec, ICRS (degrees).")
    fov_deg: float = Field(description="Field of view used (degrees, at most 360).")
    radius_deg: float = Field(description="Cone radius covered (degrees).")
    viewport_px: int = Field(description="Viewport size used to choose the order (screen pixels).")
    tile_format: str = Field(description="The survey's default tile format.")
    n_tiles: int = Field(description="Tiles in the cover.")
    pixels: list[int] = Field(description="NESTED pixel indices, ascending.")
    tiles: list[TileInfo] = Field(description="Each tile with its centre, corners and URL.")


class OverlayResponse(Envelope):
    """Catalogue sources inside the viewport, nearest first."""

    sources: list[dict[str, Any]] = Field(description="`ra_deg`, `dec_deg` (ICRS, degrees), `name`, "
                                                      "`separation_deg` (degrees), `row_index` and the other "
                                                      "scalar columns of each source.")
    n_sources: int = Field(description="Sources returned.")
    total_in_field: int = Field(description="Sources inside the cone (before the `max_rows` cap).")
    truncated: bool = Field(description="More sources are in the field than returned.")
    ra_column: str = Field(description="RA column used.")
    dec_column: str = Field(description="Dec column used.")
    name_column: str | None = Field(description="Name column used (null: names are `row N`).")
    centre_ra_deg: float = Field(description="Cone centre RA, ICRS (degrees, 0–360).")
    centre_dec_deg: float = Field(description="Cone centre Dec, ICRS (degrees).")
    radius_deg: float = Field(description="Cone radius (degrees).")


# -- routes ---------------------------------------------------------------------------------
SurveyId = Annotated[str, Path(description="Id from `/v1/hips/open`.")]
FormatQuery = Annotated[str | None, Query(description="`png`, `jpeg`, `webp` or `fits` (default: the survey's "
                                                      "first format).")]


@router.post("/open", response_model=SurveySummary)
def open_survey(body: OpenRequest, hips: HipsDep):  # noqa: ANN201
    """Open a survey (http(s) root, ``file://`` URL or directory in the data roots) and read its properties."""
    return respond(SurveySummary, ok(hips.open(body.url).summary()))


@router.get("/{survey_id}/allsky", response_class=Response, responses=_bytes_answer(
    "The Allsky image bytes in the requested format.",
    {**CACHE_HEADER, "X-Visivo-Allsky-Built": "`1` when this server assembled it from the order's tiles, else `0`.",
     "X-Visivo-Allsky-Columns": "Tiles per row of the mosaic.",
     "X-Visivo-Allsky-Tile-Px": "Side of one tile in a built mosaic (pixels; built mosaics only)."}))
def get_allsky(
    survey_id: SurveyId, hips: HipsDep,
    order: Annotated[int, Query(description="HEALPix order of the mosaic (0 … the survey's order_max).")] = 3,
    format: FormatQuery = None,
) -> Response:
    """The survey's ``NorderK/Allsky.ext``, or one built from its order-K tiles (27 across at order 3)."""
    data, content_type, built = hips.allsky(survey_id, order, format)
    cols, rows, px = allsky.allsky_layout(order, hips.survey(survey_id).properties.tile_width)
    headers = {
        "Cache-Control": "max-age=3600",
        "X-Visivo-Allsky-Built": "1" if built else "0",
        "X-Visivo-Allsky-Columns": str(cols),
    }
    if built:
        headers["X-Visivo-Allsky-Tile-Px"] = str(px)
    return Response(data, media_type=content_type, headers=headers)


@router.get("/{survey_id}/tile/{order}/{pix}", response_class=Response,
            responses=_bytes_answer("The tile bytes in the requested format.", CACHE_HEADER))
def get_tile(
    survey_id: SurveyId, hips: HipsDep,
    order: Annotated[int, Path(description="HEALPix order (0 … the survey's order_max).")],
    pix: Annotated[int, Path(description="NESTED pixel index (0 … 12·4^order − 1).")],
    format: FormatQuery = None,
) -> Response:
    """Tile ``NorderK/DirD/NpixN.ext`` of the survey (remote tiles fetched once, then cached on disk)."""
    data, content_type = hips.tile(survey_id, order, pix, format)
    return Response(data, media_type=content_type, headers={"Cache-Control": "max-age=3600"})


@router.post("/{survey_id}/query_tiles", response_model=TileCoverage)
def query_tiles(survey_id: SurveyId, body: Viewport, hips: HipsDep):  # noqa: ANN201
    """The order Aladin Lite would show and the NESTED tiles covering the viewport, with ICRS centres/corners."""
    if body.fov_deg is None and body.radius_deg is None:
        raise InvalidRequest("Give fov_deg (and optionally radius_deg).")
    fov = body.fov_deg if body.fov_deg is not None else 2.0 * float(body.radius_deg or 0.0)
    px = body.largest_px()
    return respond(TileCoverage, ok(hips.query_tiles(
        survey_id, ra_deg=body.ra, dec_deg=body.dec, fov_deg=fov, radius_deg=body.radius_deg,
        width=body.width or px, height=body.height or px, order=body.order,
    )))


@router.post("/catalogue_overlay", response_model=OverlayResponse)
def catalogue_overlay(body: OverlayRequest, request: Request, hips: HipsDep):  # noqa: ANN201
    """Sources of a catalogue file or an open catalogue dataset inside the viewport, nearest first, capped."""
    if body.radius_deg is not None:
        radius = body.radius_deg
    elif body.fov_deg is not None:
        radius = coverage.viewport_radius(body.fov_deg, body.width, body.height)
    else:
        raise InvalidRequest("Give fov_deg or radius_deg.")
    if radius <= 0 or not -90.0 <= body.dec <= 90.0:
        raise InvalidRequest("The viewport needs a positive radius and -90 <= dec <= 90.")
    query = {
        "ra_deg": body.ra % 360.0, "dec_deg": body.dec, "radius_deg": radius, "max_rows": body.max_rows,
        "ra_column": body.ra_column, "dec_column": body.dec_column, "name_column": body.name_column,
    }
    if body.dataset_id:
        runtime = get_runtime(request)
        dataset = runtime.sessions.dataset(body.dataset_id, session_id_of(request))
        result = overlay.dataset_overlay(dataset, hips.tables, runtime.roots, **query)
    elif body.path:
        result = overlay.sources_in_field(hips.tables.get(confine(body.path, hips.roots)), **query)
    else:
        raise InvalidRequest("Give the catalogue 'path' or the 'dataset_id' of an open catalogue.")
    return respond(OverlayResponse, ok(result, centre_ra_deg=query["ra_deg"], centre_dec_deg=body.dec,
                                       radius_deg=radius))

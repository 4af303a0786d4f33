"""HiPS routes: open a survey, proxy its tiles and Allsky images, cover a viewport, overlay a catalogue.

Tile and Allsky routes answer raw bytes with the format's content type; their parameter errors are
HTTP 422 and a missing tile HTTP 404 (both with the usual ``{"valid": false, "error"}`` body), so a
client never mistakes an error for image bytes. Routes are plain ``def``: remote fetches block a
worker thread of the server's pool, never the event loop nor the compute pools.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from app.deps import get_hips, get_runtime, session_id_of
from app.errors import InvalidRequest
from app.io.paths import confine
from app.responses import ok
from app.services.hips import HipsService, allsky, coverage, overlay

router = APIRouter(prefix="/v1/hips", tags=["hips"])


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str = Field(validation_alias=_alias("url", "path", "root"))


class Viewport(BaseModel):
    """A viewport: centre (ICRS degrees), field of view, optional radius, viewport pixels or order."""

    model_config = ConfigDict(extra="allow")
    ra: float = Field(validation_alias=_alias("ra", "ra_deg", "ra_center", "center_ra"))
    dec: float = Field(validation_alias=_alias("dec", "dec_deg", "dec_center", "center_dec"))
    fov_deg: float | None = Field(None, validation_alias=_alias("fov_deg", "fov"))
    radius_deg: float | None = Field(None, validation_alias=_alias("radius_deg", "radius"))
    width: int | None = Field(None, ge=1, validation_alias=_alias("width", "viewport_width", "width_px"))
    height: int | None = Field(None, ge=1, validation_alias=_alias("height", "viewport_height", "height_px"))
    viewport_px: int | None = Field(None, ge=1)
    order: int | None = Field(None, validation_alias=_alias("order", "norder"))

    def largest_px(self) -> int | None:
        sizes = [v for v in (self.width, self.height, self.viewport_px) if v]
        return max(sizes) if sizes else None


class OverlayRequest(Viewport):
    path: str | None = Field(None, validation_alias=_alias("path", "catalogue_path", "catalogue"))
    dataset_id: str | None = None
    max_rows: int = Field(1000, validation_alias=_alias("max_rows", "max_sources", "limit"))
    ra_column: str | None = None
    dec_column: str | None = None
    name_column: str | None = None


@router.post("/open")
def open_survey(body: OpenRequest, hips: HipsService = Depends(get_hips)) -> dict:
    """Open a survey (http(s) root, ``file://`` URL or directory in the data roots) and read its properties."""
    return ok(hips.open(body.url).summary())


@router.get("/{survey_id}/allsky")
def get_allsky(
    survey_id: str, order: int = 3, format: str | None = None, hips: HipsService = Depends(get_hips)
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


@router.get("/{survey_id}/tile/{order}/{pix}")
def get_tile(
    survey_id: str, order: int, pix: int, format: str | None = None, hips: HipsService = Depends(get_hips)
) -> Response:
    """Tile ``NorderK/DirD/NpixN.ext`` of the survey (remote tiles fetched once, then cached on disk)."""
    data, content_type = hips.tile(survey_id, order, pix, format)
    return Response(data, media_type=content_type, headers={"Cache-Control": "max-age=3600"})


@router.post("/{survey_id}/query_tiles")
def query_tiles(survey_id: str, body: Viewport, hips: HipsService = Depends(get_hips)) -> dict:
    """The order Aladin Lite would show and the NESTED tiles covering the viewport, with ICRS centres/corners."""
    if body.fov_deg is None and body.radius_deg is None:
        raise InvalidRequest("Give fov_deg (and optionally radius_deg).")
    fov = body.fov_deg if body.fov_deg is not None else 2.0 * float(body.radius_deg or 0.0)
    px = body.largest_px()
    return ok(hips.query_tiles(
        survey_id, ra_deg=body.ra, dec_deg=body.dec, fov_deg=fov, radius_deg=body.radius_deg,
        width=body.width or px, height=body.height or px, order=body.order,
    ))


@router.post("/catalogue_overlay")
def catalogue_overlay(body: OverlayRequest, request: Request, hips: HipsService = Depends(get_hips)) -> dict:
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
    return ok(result, centre_ra_deg=query["ra_deg"], centre_dec_deg=body.dec, radius_deg=radius)

"""SAMP messages: the standard MTypes, string-valued parameters, validation.

SAMP encodes every scalar as a string (integers and floats in decimal, booleans as ``"0"``/``"1"``);
lists and maps nest. :func:`samp_value` converts JSON values accordingly, so a client may send
``{"ra": 187.28}`` and peers receive ``{"ra": "187.28"}``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from app.errors import InvalidRequest

IMAGE_LOAD_FITS = "image.load.fits"
TABLE_LOAD_VOTABLE = "table.load.votable"
COORD_POINT_AT_SKY = "coord.pointAt.sky"
TABLE_HIGHLIGHT_ROW = "table.highlight.row"
TABLE_SELECT_ROW_LIST = "table.select.rowList"
#: The MTypes this server sends and subscribes to.
STANDARD_MTYPES = (IMAGE_LOAD_FITS, TABLE_LOAD_VOTABLE, COORD_POINT_AT_SKY, TABLE_HIGHLIGHT_ROW, TABLE_SELECT_ROW_LIST)
HUB_SHUTDOWN = "samp.hub.event.shutdown"

_MTYPE = re.compile(r"^[0-9A-Za-z_-]+(\.[0-9A-Za-z_-]+)*$")
#: Parameters each standard MType needs; a tuple inside means "one of these".
_REQUIRED: dict[str, tuple[str | tuple[str, ...], ...]] = {
    IMAGE_LOAD_FITS: ("url",),
    TABLE_LOAD_VOTABLE: ("url",),
    COORD_POINT_AT_SKY: ("ra", "dec"),
    TABLE_HIGHLIGHT_ROW: (("table-id", "url"), "row"),
    TABLE_SELECT_ROW_LIST: (("table-id", "url"), "row-list"),
}
MAX_DEPTH = 8


def samp_value(value: Any, _depth: int = 0) -> str | list | dict:
    """A JSON value as a SAMP value: strings, lists and string-keyed maps only (``None`` → ``""``)."""
    if _depth > MAX_DEPTH:
        raise InvalidRequest("SAMP parameters are nested too deeply.")
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest("SAMP parameters cannot carry NaN or infinity.")
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return [samp_value(v, _depth + 1) for v in value]
    if isinstance(value, dict):
        return {str(k): samp_value(v, _depth + 1) for k, v in value.items()}
    return str(value)


def check_mtype(mtype: str) -> str:
    """``mtype`` if it is a syntactically valid MType (dot-separated atoms)."""
    text = (mtype or "").strip()
    if not _MTYPE.match(text) or len(text) > 200:
        raise InvalidRequest(f"Invalid SAMP MType '{mtype}'.")
    return text


def make_message(mtype: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """``{"samp.mtype", "samp.params"}`` with string-valued params; standard MTypes are checked for their params."""
    mtype = check_mtype(mtype)
    converted = samp_value(params or {})
    if not isinstance(converted, dict):
        raise InvalidRequest("SAMP params must be an object.")
    for need in _REQUIRED.get(mtype, ()):
        options = need if isinstance(need, tuple) else (need,)
        if not any(converted.get(o) not in (None, "", []) for o in options):
            raise InvalidRequest(f"{mtype} needs the parameter {' or '.join(options)}.")
    if mtype == TABLE_SELECT_ROW_LIST and not isinstance(converted.get("row-list"), list):
        raise InvalidRequest("table.select.rowList needs 'row-list' as a list.")
    return {"samp.mtype": mtype, "samp.params": converted}

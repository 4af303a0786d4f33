"""Validation of the task-specific ``parameters`` of a JS9 analysis request.

Every failure is an HTTP 400 ``{"detail": "Invalid parameter '<name>': <reason>"}``. Unknown
parameters are ignored (they still take part in the cache key, like every parameter).
"""

from __future__ import annotations

import math
from typing import Any

from app.services.js9.errors import Js9BadRequest

ENGINES = ("native", "casa")


def _bad(name: str, reason: str) -> Js9BadRequest:
    return Js9BadRequest(f"Invalid parameter '{name}': {reason}")


def get_bool(params: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean (JSON true/false; also 0/1 and "true"/"false")."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "0", "1"):
        return value.strip().lower() in ("true", "yes", "1")
    raise _bad(name, "expected true or false")


def get_int(params: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise _bad(name, "expected an integer")
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise _bad(name, "expected an integer")
    if not lo <= number <= hi:
        raise _bad(name, f"must be between {lo} and {hi}")
    return number


def get_float(params: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    """A finite number in ``[lo, hi]``."""
    value = params.get(name)
    if value is None:
        return default
    if isinstance(value, bool):
        raise _bad(name, "expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(name, "expected a number") from None
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _bad(name, f"must be a finite number between {lo:g} and {hi:g}")
    return number


def get_levels(params: dict[str, Any], name: str = "levels") -> list[float] | None:
    """Explicit contour levels: a non-empty list of finite numbers (sorted ascending), or ``None``."""
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not value or len(value) > 1000:
        raise _bad(name, "expected a list of 1 to 1000 numbers")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(float(item)):
            raise _bad(name, "every level must be a finite number")
        out.append(float(item))
    return sorted(out)


def get_choice(params: dict[str, Any], name: str, default: str, choices: tuple[str, ...]) -> str:
    """A string among ``choices`` (case-insensitive)."""
    value = params.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise _bad(name, f"expected one of {list(choices)}")
    return value.strip().lower()


def get_stokes(params: dict[str, Any]) -> str | None:
    """The Stokes parameter (``"I"``, ``"Q"`` …), or ``None`` for the first plane."""
    value = params.get("stokes")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip().isalpha() or len(value.strip()) > 2:
        raise _bad("stokes", "expected a Stokes name such as 'I', 'Q', 'U', 'V', 'RR', 'XX'")
    return value.strip().upper()


def get_box(params: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """CASA ``box`` ``"x1,y1,x2,y2"``: 0-based, inclusive pixel corners (CASA's own convention)."""
    value = params.get("box")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad("box", "expected 'x1,y1,x2,y2' (0-based pixels, CASA convention)")
    parts = [p.strip() for p in value.split(",")]
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise _bad("box", "expected four integers 'x1,y1,x2,y2' (0-based pixels, CASA convention)") from None
    if len(numbers) != 4:
        raise _bad("box", "expected four integers 'x1,y1,x2,y2' (one box)")
    x1, y1, x2, y2 = numbers
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_in_image(params: dict[str, Any], nx: int, ny: int) -> tuple[int, int, int, int] | None:
    """:func:`get_box`, checked against an ``nx × ny`` plane (400 when any corner lies outside)."""
    box = get_box(params)
    if box is not None and (box[0] < 0 or box[1] < 0 or box[2] >= nx or box[3] >= ny):
        raise _bad("box", f"'{params['box']}' is outside the image (0..{nx - 1}, 0..{ny - 1})")
    return box

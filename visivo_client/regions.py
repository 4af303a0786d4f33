"""JS9 region objects from DS9-style text: ``circle(128,128,20)`` → ``{"shape": "circle", "x": 128, ...}``.

Coordinates are JS9/FITS image pixels, 1-based (the server's default); angles in degrees
counter-clockwise from +x.
"""

from __future__ import annotations

import re
from typing import Any

#: Shape → field names of its numbers, in DS9 order (angle optional where listed last).
_FIELDS: dict[str, tuple[str, ...]] = {
    "circle": ("x", "y", "r"),
    "box": ("x", "y", "width", "height", "angle"),
    "ellipse": ("x", "y", "rx", "ry", "angle"),
    "point": ("x", "y"),
}
_ALIASES = {"c": "circle", "rectangle": "box", "rect": "box", "r": "box", "e": "ellipse", "pt": "point",
            "poly": "polygon", "p": "polygon"}
_PATTERN = re.compile(r"^\s*([a-zA-Z]+)\s*\(([^()]*)\)\s*$")


def parse_region(region: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """A JS9 region object from DS9-style text (a dict passes through unchanged).

    Examples
    --------
    >>> parse_region("circle(128,128,20)")
    {'shape': 'circle', 'x': 128.0, 'y': 128.0, 'r': 20.0}
    >>> parse_region("polygon(1,1, 10,1, 10,10)")["pts"][2]
    {'x': 10.0, 'y': 10.0}
    """
    if region is None or isinstance(region, dict):
        return region
    match = _PATTERN.match(region)
    if not match:
        raise ValueError(f"region {region!r}: expected shape(n1,n2,...), e.g. circle(128,128,20)")
    shape = _ALIASES.get(match.group(1).lower(), match.group(1).lower())
    try:
        numbers = [float(v) for v in match.group(2).replace(" ", ",").split(",") if v]
    except ValueError:
        raise ValueError(f"region {region!r}: the values must be numbers") from None
    if shape == "polygon":
        if len(numbers) < 6 or len(numbers) % 2:
            raise ValueError(f"region {region!r}: a polygon needs at least 3 x,y pairs")
        return {"shape": "polygon", "pts": [{"x": x, "y": y} for x, y in zip(numbers[::2], numbers[1::2],
                                                                              strict=True)]}
    names = _FIELDS.get(shape)
    if names is None:
        raise ValueError(f"region {region!r}: unknown shape (circle, box, ellipse, polygon, point)")
    required = len(names) - (1 if names[-1] == "angle" else 0)
    if not required <= len(numbers) <= len(names):
        raise ValueError(f"region {region!r}: {shape} takes {', '.join(names)}")
    return {"shape": shape, **dict(zip(names, numbers, strict=False))}

"""JS9 region objects → pixel masks and CASA region text (CRTF).

Pixel convention (decided, tested and documented in the README):

- **Input**: region coordinates are *JS9 image pixels*, 1-based as in FITS, DS9 and JS9 — the
  centre of the first pixel is ``(1, 1)``. A client that counts from 0 sends
  ``"pixel_origin": 0`` in the region object. Internally everything is converted to 0-based
  array indices (``x0 = x − 1``), which is also CASA's pixel convention, so a JS9 circle at
  ``(129, 129)`` is the CASA region ``circle[[128pix, 128pix], …]``.
- **Membership**: a pixel belongs to a region when its *centre* lies inside or on the boundary,
  decided exactly as casacore decides it (:mod:`.casa_geometry`, including its float32
  arithmetic and tolerances), so the native and CASA engines select the same pixels: circle and
  ellipse ``(u/rx)² + (v/ry)² ≤ 1`` (``u`` along ``angle``; casacore ``LCEllipsoid``); box
  ``x − w/2 ≤ i ≤ x + w/2`` and the same in y (``LCBox``); rotated box and polygon: scan lines
  with the boundary included (``LCPolygon``).

Shapes (aliases as in the reference and as JS9 names them):

===========  ===========================  =====================================================
shape        aliases                      fields (JS9 names accepted as well)
===========  ===========================  =====================================================
circle       ``c``                        ``x``, ``y``, ``r`` (or ``radius``)
box          ``rectangle``, ``r``,        ``x``, ``y``, ``width``, ``height``, ``angle`` (deg, optional)
             ``rect``
ellipse      ``e``                        ``x``, ``y``, ``rx``, ``ry`` (JS9: ``r1``, ``r2``; or ``eradius``), ``angle``
polygon      ``poly``, ``p``              ``pts: [{x, y}, …]`` (or ``points: [[x, y], …]``), ≥ 3 vertices
point        ``pt``                       ``x``, ``y`` (the pixel containing it; for ``imval``)
===========  ===========================  =====================================================

Angles are degrees counter-clockwise from the +x axis (JS9/DS9). CRTF written for CASA:
``circle[[x,y],r]``; a box as its corners ``box[[x−w/2, y−h/2], [x+w/2, y+h/2]]`` (CRTF's ``box``
takes corners, so the reference's ``box[[x,y],[w,h]]`` would be wrong; and ``centerbox``/``rotbox``
are converted to sky coordinates by CASA, which moves edge pixels in and out away from the
reference pixel), a rotated box as the ``poly`` of its four corners, ``ellipse[[x,y],[ry,rx],a]``
(CRTF's first semi-axis lies at ``a + 90°``), ``poly[[x1,y1],…]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.services.js9 import casa_geometry
from app.services.js9.errors import Js9BadRequest

SHAPE_ALIASES: dict[str, str] = {
    "circle": "circle", "c": "circle",
    "box": "box", "rectangle": "box", "r": "box", "rect": "box",
    "ellipse": "ellipse", "e": "ellipse",
    "polygon": "polygon", "poly": "polygon", "p": "polygon",
    "point": "point", "pt": "point",
}

#: Most vertices accepted in a polygon.
MAX_POLYGON_VERTICES = 10_000


class RegionError(Js9BadRequest):
    """An invalid region (HTTP 400, ``{"detail": "Invalid region: …"}``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"Invalid region: {reason}")


@dataclass(frozen=True)
class Region:
    """A region in 0-based pixel coordinates (x = column/first FITS axis, y = row/second FITS axis).

    Attributes
    ----------
    shape
        ``circle``, ``box``, ``ellipse``, ``polygon`` or ``point``.
    x, y
        Centre (0-based pixels); for a polygon the mean of its vertices.
    radius
        Circle radius (pixels).
    width, height
        Box size (pixels).
    rx, ry
        Ellipse semi-axes (pixels): ``rx`` along ``angle``, ``ry`` perpendicular to it.
    angle
        Degrees counter-clockwise from +x (box, ellipse).
    points
        Polygon vertices ``((x, y), …)`` (0-based).
    """

    shape: str
    x: float
    y: float
    radius: float = 0.0
    width: float = 0.0
    height: float = 0.0
    rx: float = 0.0
    ry: float = 0.0
    angle: float = 0.0
    points: tuple[tuple[float, float], ...] = ()

    # -- geometry ------------------------------------------------------------------------------

    def _polygon(self) -> np.ndarray:
        """Vertices ``(n, 2)`` of a polygon or of a rotated box, ``(x, y)`` 0-based."""
        if self.shape == "polygon":
            return np.asarray(self.points, dtype=np.float64)
        t = math.radians(self.angle)
        c, s = math.cos(t), math.sin(t)
        hw, hh = 0.5 * self.width, 0.5 * self.height
        corners = [(-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh)]
        return np.asarray([(self.x + u * c - v * s, self.y + u * s + v * c) for u, v in corners])

    def _axis_aligned_box(self) -> tuple[float, float, float, float] | None:
        """``(x0, x1, y0, y1)`` edges for a box whose angle is a multiple of 90°, else ``None``."""
        if self.shape != "box":
            return None
        turns = self.angle / 90.0
        if abs(turns - round(turns)) > 1e-12:
            return None
        w, h = (self.height, self.width) if int(round(turns)) % 2 else (self.width, self.height)
        return self.x - 0.5 * w, self.x + 0.5 * w, self.y - 0.5 * h, self.y + 0.5 * h

    def pixel_mask(self, ny: int, nx: int) -> tuple[slice, slice, np.ndarray]:
        """The pixels of an ``(ny, nx)`` plane inside the region, as CASA selects them.

        Returns
        -------
        ys, xs : slice
            The bounding box CASA reports as ``blc``/``trc`` (0-based, step 1): the member pixels'
            box for boxes and polygons, casacore's ellipsoid box for circles and ellipses.
        mask : numpy.ndarray
            ``(len(ys), len(xs))`` bool membership within the bounding box.

        Raises
        ------
        RegionError
            If no pixel of the plane lies in the region.
        """
        if self.shape == "point":
            ix, iy = math.floor(self.x + 0.5), math.floor(self.y + 0.5)
            if not (0 <= ix < nx and 0 <= iy < ny):
                raise RegionError(f"point ({self.x + 1:g}, {self.y + 1:g}) lies outside the image")
            return slice(iy, iy + 1), slice(ix, ix + 1), np.ones((1, 1), dtype=bool)
        found = self._casa_mask(ny, nx)
        if found is None or not found[2].any():
            raise RegionError("the region contains no pixel of the image")
        return found

    def _casa_mask(self, ny: int, nx: int) -> casa_geometry.Mask:
        if self.shape == "circle":
            return casa_geometry.ellipsoid_mask(self.x, self.y, self.radius, self.radius, ny, nx)
        if self.shape == "ellipse":
            turn = self.angle % 180.0
            if min(turn, 180.0 - turn) <= 9e-4:  # casacore: theta near pi/2 -> axis-aligned
                return casa_geometry.ellipsoid_mask(self.x, self.y, self.rx, self.ry, ny, nx)
            if turn == 90.0:
                return casa_geometry.ellipsoid_mask(self.x, self.y, self.ry, self.rx, ny, nx)
            return casa_geometry.rotated_ellipse_mask(self.x, self.y, self.rx, self.ry, math.radians(self.angle),
                                                      ny, nx)
        box = self._axis_aligned_box()
        if box is None:
            poly = self._polygon()
            return casa_geometry.polygon_mask(poly[:, 0].tolist(), poly[:, 1].tolist(), ny, nx)
        bx0, bx1, by0, by1 = box
        x0, x1 = max(0, math.ceil(bx0 - 1e-9)), min(nx - 1, math.floor(bx1 + 1e-9))
        y0, y1 = max(0, math.ceil(by0 - 1e-9)), min(ny - 1, math.floor(by1 + 1e-9))
        if x1 < x0 or y1 < y0:
            return None
        gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
        mask = (gx >= bx0) & (gx <= bx1) & (gy >= by0) & (gy <= by1)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        return slice(y0 + r0, y0 + r1), slice(x0 + c0, x0 + c1), mask[r0:r1, c0:c1]

    # -- CASA ----------------------------------------------------------------------------------

    def crtf(self) -> str:
        """The region as CASA region text in (0-based) pixel units."""

        def p(v: float) -> str:
            return f"{_num(v)}pix"

        centre = f"[{p(self.x)}, {p(self.y)}]"
        if self.shape == "circle":
            return f"circle[{centre}, {p(self.radius)}]"
        if self.shape == "point":
            ix, iy = math.floor(self.x + 0.5), math.floor(self.y + 0.5)
            return f"box[[{ix}pix, {iy}pix], [{ix}pix, {iy}pix]]"
        box = self._axis_aligned_box()
        if box is not None:
            return f"box[[{p(box[0])}, {p(box[2])}], [{p(box[1])}, {p(box[3])}]]"
        if self.shape == "ellipse":
            return f"ellipse[{centre}, [{p(self.ry)}, {p(self.rx)}], {_num(self.angle)}deg]"
        return "poly[" + ", ".join(f"[{p(x)}, {p(y)}]" for x, y in self._polygon().tolist()) + "]"

    def describe(self) -> dict[str, Any]:
        """JSON summary for results: the shape and its CASA region text (0-based pixels)."""
        return {"shape": self.shape, "crtf": self.crtf()}


def _num(value: float) -> str:
    """Shortest exact decimal of a float (``repr``), without a trailing ``.0``."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _finite(obj: dict[str, Any], key: str, *alts: str) -> float:
    for name in (key, *alts):
        if name in obj and obj[name] is not None:
            value = obj[name]
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                raise RegionError(f"'{name}' must be a number")
            try:
                number = float(value)
            except ValueError:
                raise RegionError(f"'{name}' must be a number") from None
            if not math.isfinite(number):
                raise RegionError(f"'{name}' must be finite")
            return number
    names = " or ".join(f"'{n}'" for n in (key, *alts))
    raise RegionError(f"missing {names}")


def _positive(obj: dict[str, Any], key: str, *alts: str) -> float:
    value = _finite(obj, key, *alts)
    if value <= 0:
        raise RegionError(f"'{key}' must be positive")
    return value


def _vertices(obj: dict[str, Any], offset: float) -> tuple[tuple[float, float], ...]:
    raw = obj.get("pts", obj.get("points"))
    if not isinstance(raw, list) or len(raw) < 3:
        raise RegionError("a polygon needs 'pts' (or 'points') with at least 3 vertices")
    if len(raw) > MAX_POLYGON_VERTICES:
        raise RegionError(f"a polygon may have at most {MAX_POLYGON_VERTICES} vertices")
    out = []
    for i, vertex in enumerate(raw):
        if isinstance(vertex, dict):
            x, y = _finite(vertex, "x"), _finite(vertex, "y")
        elif isinstance(vertex, (list, tuple)) and len(vertex) == 2:
            x, y = _finite({"x": vertex[0]}, "x"), _finite({"y": vertex[1]}, "y")
        else:
            raise RegionError(f"polygon vertex {i} must be {{x, y}} or [x, y]")
        out.append((x - offset, y - offset))
    return tuple(out)


def parse_region(obj: Any) -> Region | None:
    """Validate a JS9 region object and convert it to 0-based pixels (``None`` when absent or empty).

    Raises
    ------
    RegionError
        Not an object, unknown shape, missing/non-numeric/non-positive fields.
    """
    if obj is None or obj == {}:
        return None
    if not isinstance(obj, dict):
        raise RegionError("the region must be a JSON object")
    shape_raw = obj.get("shape")
    if not isinstance(shape_raw, str) or shape_raw.strip().lower() not in SHAPE_ALIASES:
        raise RegionError(
            f"unsupported shape {shape_raw!r}; supported: circle (c), box (rectangle, r), ellipse (e), "
            "polygon (poly, p), point"
        )
    shape = SHAPE_ALIASES[shape_raw.strip().lower()]
    origin = obj.get("pixel_origin", 1)
    if origin not in (0, 1) or isinstance(origin, bool):
        raise RegionError("'pixel_origin' must be 0 or 1")
    offset = float(origin)
    if shape == "polygon":
        pts = _vertices(obj, offset)
        xs, ys = zip(*pts, strict=True)
        return Region("polygon", sum(xs) / len(xs), sum(ys) / len(ys), points=pts)
    x, y = _finite(obj, "x") - offset, _finite(obj, "y") - offset
    if shape == "circle":
        return Region("circle", x, y, radius=_positive(obj, "r", "radius"))
    if shape == "point":
        return Region("point", x, y)
    angle = _finite(obj, "angle") if obj.get("angle") is not None else 0.0
    if shape == "box":
        return Region("box", x, y, width=_positive(obj, "width"), height=_positive(obj, "height"), angle=angle)
    radii = obj.get("eradius")
    if isinstance(radii, dict):
        rx, ry = _positive(radii, "x"), _positive(radii, "y")
    else:
        rx, ry = _positive(obj, "rx", "r1"), _positive(obj, "ry", "r2")
    return Region("ellipse", x, y, rx=rx, ry=ry, angle=angle)

"""Image previews and full images: RGBA PNG (default) or raw float32, from a 2-D image or one cube channel.

Decimation (preview) is nearest-neighbour with source indices ``floor((i + 0.5)·W/pw)``, where
``pw, ph = round(W·s), round(H·s)`` and ``s = max_longest_side / max(W, H)``; an image already
within the cap is returned whole with ``is_preview: false``. ``preview_scale_factor`` is
``max(W, H) / max(pw, ph)``. Only the rows the preview keeps are converted (row blocks of the
memmap), so a preview of a huge image stays cheap.

PNG rendering: display limits from ``vmin``/``vmax`` when given, else the ``percentile`` interval
of the finite pixels (astropy.visualization ``PercentileInterval``, default 99.5 %), then an
astropy stretch (default ``asinh``) and a 256-entry colour map; NaN/inf pixels are fully
transparent. PNG rows run from the top of the picture: with ``origin: "lower"`` (default, as
DS9/CARTA show a sky image) the last FITS row is the first PNG row; ``"upper"`` keeps FITS row 0
first. The float32 payload (``format: "float32"``) always has row 0 = FITS y = 0.

Without ``format`` the answer carries both: the PNG the API reference promises and the float32
plane (``scalar_type``, ``data_base64``) the desktop client's image window reads.

Limits (:mod:`app.services.budget`): the working memory (:data:`FLOAT_BYTES_PER_PIXEL` and/or
:data:`PNG_BYTES_PER_PIXEL` per output pixel) is checked against the per-request budget before
reading; a float32 payload, whose base64 text is ``4·ceil(4·w·h/3)`` bytes, is checked against
``VISIVO_MAX_RESPONSE_MB`` before reading (the error names both sizes in MiB), a PNG once encoded.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from astropy.visualization import (
    AsinhStretch,
    HistEqStretch,
    LinearStretch,
    LogStretch,
    PercentileInterval,
    SinhStretch,
    SqrtStretch,
    SquaredStretch,
)
from PIL import Image

from app.errors import InvalidRequest
from app.services.budget import base64_bytes, check_budget, check_response
from app.services.cube_reads import require_cube
from app.services.encoding import encode_array
from app.services.sessions import Dataset
from kernel_common.views import finite_range

DEFAULT_STRETCH = "asinh"
DEFAULT_PERCENTILE = 99.5
DEFAULT_COLORMAP = "gray"
_ROW_BLOCK_BYTES = 32 << 20
#: Peak working bytes per output pixel: float32 answers (array, base64, JSON copies) and PNG
#: rendering (float32 plane, float64 normalised and stretched planes, LUT indices, RGBA, PNG text).
FLOAT_BYTES_PER_PIXEL = 20
PNG_BYTES_PER_PIXEL = 48

_STRETCHES = {"linear": LinearStretch, "sqrt": SqrtStretch, "log": LogStretch, "asinh": AsinhStretch,
              "sinh": SinhStretch, "squared": SquaredStretch, "histeq": None}

#: 17 evenly spaced stops of matplotlib's perceptually uniform maps (CC0), interpolated to 256.
_STOPS = {
    "viridis": "440154 48186a 472d7b 424086 3b528b 33638d 2c728e 26828e 21918c 1fa088 28ae80 3fbc73 5ec962 "
               "84d44b addc30 d8e219 fde725",
    "inferno": "000004 0b0724 210c4a 3d0965 57106e 71196e 8a226a a32c61 bc3754 d24644 e45a31 f1731d f98e09 "
               "fcac11 f9cb35 f2ea69 fcffa4",
    "magma": "000004 0a0822 1d1147 36106b 51127c 6a1c81 832681 9c2e7f b73779 d0416f e75263 f56b5c fc8961 "
             "fea772 fec488 fde2a3 fcfdbf",
    "plasma": "0d0887 310597 4c02a1 6600a7 7e03a8 9511a1 aa2395 bc3587 cc4778 da5a6a e66c5c f0804e f89540 "
              "fdac33 fdc527 f8df25 f0f921",
}


def _lut_from_stops(stops: str) -> np.ndarray:
    rgb = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in stops.split()], dtype=np.float64)
    x = np.linspace(0.0, 1.0, len(rgb))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, x, rgb[:, c]) for c in range(3)], axis=1)


def _cubehelix(start: float = 0.5, rot: float = -1.5, hue: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """Green (2011) cubehelix, 256 entries in 0..255."""
    lam = np.linspace(0.0, 1.0, 256) ** gamma
    phi = 2.0 * np.pi * (start / 3.0 + rot * np.linspace(0.0, 1.0, 256))
    amp = hue * lam * (1.0 - lam) / 2.0
    r = lam + amp * (-0.14861 * np.cos(phi) + 1.78277 * np.sin(phi))
    g = lam + amp * (-0.29227 * np.cos(phi) - 0.90649 * np.sin(phi))
    b = lam + amp * (1.97294 * np.cos(phi))
    return np.clip(np.stack([r, g, b], axis=1), 0.0, 1.0) * 255.0


def _hot() -> np.ndarray:
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=1) * 255.0


def colormap(name: str | None) -> np.ndarray:
    """(256, 3) uint8 lookup table; ``_r`` reverses any map."""
    text = (name or DEFAULT_COLORMAP).strip().lower()
    reverse = text.endswith("_r")
    base = text.removesuffix("_r")
    if base in ("gray", "grey"):
        lut = np.repeat(np.linspace(0.0, 255.0, 256)[:, None], 3, axis=1)
    elif base in _STOPS:
        lut = _lut_from_stops(_STOPS[base])
    elif base == "cubehelix":
        lut = _cubehelix()
    elif base == "hot":
        lut = _hot()
    else:
        valid = ", ".join(["gray", *_STOPS, "cubehelix", "hot"])
        raise InvalidRequest(f"Unknown colormap '{name}'; use one of {valid} (add _r to reverse).")
    lut = np.round(lut).astype(np.uint8)
    return lut[::-1] if reverse else lut


def preview_indices(n: int, m: int) -> np.ndarray:
    """Nearest-neighbour source indices ``floor((i + 0.5)·n/m)`` for ``m`` samples of ``n``."""
    return np.minimum(np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)


def output_size(dataset: Dataset, max_longest_side: int | None) -> tuple[int, int]:
    """``(width, height)`` of the answer's plane, as :func:`read_plane` will make it (before reading)."""
    _, ny, nx = require_cube(dataset).shape
    longest = max(nx, ny)
    if max_longest_side is None or max_longest_side < 1 or longest <= max_longest_side:
        return nx, ny
    scale = max_longest_side / longest
    return max(1, round(nx * scale)), max(1, round(ny * scale))


def read_plane(dataset: Dataset, *, channel: int | None, max_longest_side: int | None) -> dict[str, Any]:
    """The (decimated) float32 plane and its geometry."""
    source = require_cube(dataset)
    nz, ny, nx = source.shape
    k = 0 if channel is None else int(channel)
    if not 0 <= k < nz:
        raise InvalidRequest(f"Channel {channel} out of range (0..{nz - 1}).")
    longest = max(nx, ny)
    if max_longest_side is not None and max_longest_side < 1:
        raise InvalidRequest("max_longest_side must be >= 1.")
    if max_longest_side is None or longest <= max_longest_side:
        data = source.read(z=slice(k, k + 1))[0]
        return {"data": data, "channel": k, "depth": nz, "full_width": nx, "full_height": ny,
                "is_preview": False, "preview_scale_factor": 1.0}
    scale = max_longest_side / longest
    pw, ph = max(1, round(nx * scale)), max(1, round(ny * scale))
    xs, ys = preview_indices(nx, pw), preview_indices(ny, ph)
    out = np.empty((ph, pw), dtype=np.float32)
    block = max(1, _ROW_BLOCK_BYTES // (4 * nx))
    for r0 in range(0, ny, block):
        wanted = np.flatnonzero((ys >= r0) & (ys < r0 + block))
        if wanted.size == 0:
            continue
        top, bottom = int(ys[wanted[0]]), int(ys[wanted[-1]]) + 1
        rows = source.read(z=slice(k, k + 1), y=slice(top, bottom))[0]
        out[wanted] = rows[ys[wanted] - top][:, xs]
    return {"data": out, "channel": k, "depth": nz, "full_width": nx, "full_height": ny, "is_preview": True,
            "preview_scale_factor": longest / max(pw, ph)}


def display_limits(data: np.ndarray, *, percentile: float | None, vmin: float | None,
                   vmax: float | None) -> tuple[float, float]:
    """``(vmin, vmax)`` for display: explicit values, else the percentile interval of the finite pixels."""
    pct = DEFAULT_PERCENTILE if percentile is None else float(percentile)
    if not 0.0 < pct <= 100.0:
        raise InvalidRequest("percentile must be in (0, 100].")
    finite = data[np.isfinite(data)]
    lo = hi = 0.0
    if finite.size:
        lo, hi = (float(v) for v in PercentileInterval(pct).get_limits(finite))
    lo = float(vmin) if vmin is not None else lo
    hi = float(vmax) if vmax is not None else hi
    return lo, hi


def render_rgba(data: np.ndarray, *, vmin: float, vmax: float, stretch: str | None, colormap_name: str | None,
                origin: str | None) -> np.ndarray:
    """(h, w, 4) uint8 RGBA of a plane: limits → [0, 1] → stretch → colour map; non-finite → transparent."""
    name = (stretch or DEFAULT_STRETCH).strip().lower()
    if name not in _STRETCHES:
        raise InvalidRequest(f"Unknown stretch '{stretch}'; use one of {', '.join(_STRETCHES)}.")
    where = (origin or "lower").strip().lower()
    if where not in ("lower", "upper"):
        raise InvalidRequest(f"Unknown origin '{origin}'; use 'lower' or 'upper'.")
    lut = colormap(colormap_name)
    finite = np.isfinite(data)
    span = vmax - vmin
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if span > 0:
            norm = np.clip((np.where(finite, data, vmin).astype(np.float64) - vmin) / span, 0.0, 1.0)
        else:
            norm = np.zeros(data.shape, dtype=np.float64)
        if name == "histeq":
            values = norm[finite]
            fn = HistEqStretch(values if values.size else np.zeros(1))
        else:
            fn = _STRETCHES[name]()
        shown = np.clip(np.nan_to_num(fn(norm, clip=True), nan=0.0), 0.0, 1.0)
    rgba = np.zeros(data.shape + (4,), dtype=np.uint8)
    rgba[..., :3] = lut[np.round(shown * 255.0).astype(np.intp)]
    rgba[..., 3] = np.where(finite, 255, 0).astype(np.uint8)
    rgba[~finite, :3] = 0
    return rgba[::-1] if where == "lower" else rgba


def png_base64(rgba: np.ndarray) -> str:
    """Base64 of an RGBA PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buffer, format="PNG", compress_level=6)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


#: ``format`` echoed when the request names none: both payloads.
BOTH_FORMATS = "png+float32"


def image_payload(dataset: Dataset, *, max_longest_side: int | None, channel: int | None = None,
                  fmt: str | None = None, stretch: str | None = None, percentile: float | None = None,
                  colormap_name: str | None = None, vmin: float | None = None, vmax: float | None = None,
                  origin: str | None = None, compression: str = "none") -> dict[str, Any]:
    """The ``/v1/image/preview`` (``max_longest_side``) or ``/v1/image/full`` (``None``) response.

    ``fmt`` ``None`` answers both the PNG and the float32 plane. Sizes are checked before reading.
    """
    kind = BOTH_FORMATS if fmt is None else fmt.strip().lower()
    if kind not in ("png", "float32", BOTH_FORMATS):
        raise InvalidRequest(f"Unknown image format '{fmt}'; use 'png' or 'float32' (or none for both).")
    width, height = output_size(dataset, max_longest_side)
    what = f"Image of {width}×{height} pixels"
    if kind != "png":
        check_response(base64_bytes(4 * width * height), what)
    per_pixel = {"png": PNG_BYTES_PER_PIXEL, "float32": FLOAT_BYTES_PER_PIXEL}.get(
        kind, PNG_BYTES_PER_PIXEL + FLOAT_BYTES_PER_PIXEL)
    check_budget(per_pixel * width * height, what)
    plane = read_plane(dataset, channel=channel, max_longest_side=max_longest_side)
    data = plane.pop("data")
    lo, hi = finite_range(data)
    height, width = data.shape
    body: dict[str, Any] = {
        "width": width, "height": height, **plane, "range_min": lo, "range_max": hi,
        "bunit": dataset.info.get("bunit", ""), "format": kind,
    }
    if kind != "png":
        body.update(scalar_type="float32", compression=compression, data_base64=encode_array(data, compression))
    if kind == "float32":
        return body
    dmin, dmax = display_limits(data, percentile=percentile, vmin=vmin, vmax=vmax)
    rgba = render_rgba(data, vmin=dmin, vmax=dmax, stretch=stretch, colormap_name=colormap_name, origin=origin)
    png = png_base64(rgba)
    check_response(len(png), what)  # a PNG's size is known only once encoded
    body.update(
        mime_type="image/png", png_base64=png, display_min=dmin, display_max=dmax,
        stretch=(stretch or DEFAULT_STRETCH).lower(), colormap=(colormap_name or DEFAULT_COLORMAP).lower(),
        percentile=DEFAULT_PERCENTILE if percentile is None else float(percentile),
        origin=(origin or "lower").lower(),
    )
    return body

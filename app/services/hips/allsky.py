"""Building an ``Allsky`` image from the tiles of one order, as Aladin lays it out.

The Allsky of order ``k`` holds the ``12·4^k`` tiles in NESTED order, row by row, ``floor(sqrt(12·4^k))``
tiles across (27 at order 3), each shrunk to :data:`ALLSKY_TILE_PX` pixels (or the tile width if
smaller). Image tiles (PNG/JPEG/WebP) keep their orientation; FITS tiles are stored bottom-up, so the
mosaic is assembled top-down and flipped back, giving the FITS Allsky Aladin writes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from astropy.io import fits
from PIL import Image

from app.errors import InvalidRequest, NotFound

ALLSKY_TILE_PX = 64
MAX_ALLSKY_ORDER = 3
FETCH_WORKERS = 8
MAX_TILE_SIDE = 4096


def allsky_columns(order: int) -> int:
    """Tiles across an Allsky image of ``order``: ``floor(sqrt(12·4^order))`` (27 at order 3)."""
    return math.isqrt(12 * 4**order)


def allsky_layout(order: int, tile_width: int) -> tuple[int, int, int]:
    """``(columns, rows, tile_px)`` of the Allsky of ``order`` for tiles ``tile_width`` pixels wide."""
    n = 12 * 4**order
    cols = allsky_columns(order)
    return cols, math.ceil(n / cols), min(ALLSKY_TILE_PX, tile_width)


def _shrink(array: np.ndarray, px: int) -> np.ndarray:
    """Block-average a square 2-D tile to ``px × px`` (finite pixels only; all-blank blocks → NaN)."""
    size = array.shape[0]
    if size == px:
        return array.astype(np.float32)
    if size % px:
        idx = (np.arange(px) * size) // px
        return array[np.ix_(idx, idx)].astype(np.float32)
    f = size // px
    blocks = array.reshape(px, f, px, f).astype(np.float64)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0.0).sum(axis=(1, 3))
    count = finite.sum(axis=(1, 3))
    out = np.full((px, px), np.nan, dtype=np.float32)
    np.divide(total, count, out=out, where=count > 0, casting="unsafe")
    return out


def _fits_tile(data: bytes) -> np.ndarray:
    with fits.open(io.BytesIO(data)) as hdul:
        hdu = hdul[0]
        array = np.asarray(hdu.data)
        blank = hdu.header.get("BLANK")
        if array.dtype.kind in "iu" and blank is not None:
            array = np.where(array == blank, np.nan, array)
        return np.asarray(array, dtype=np.float32)


def _fetch_all(get_tile: Callable[[int], bytes | None], n: int) -> list[bytes | None]:
    pool = ThreadPoolExecutor(max_workers=FETCH_WORKERS, thread_name_prefix="hips-allsky")
    try:
        return list(pool.map(get_tile, range(n)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # on a failure, do not wait for the tiles not started


def _build_fits(tiles: list[bytes | None], cols: int, rows: int, px: int) -> bytes:
    mosaic = np.full((rows * px, cols * px), np.nan, dtype=np.float32)
    for pix, data in enumerate(tiles):
        if data is None:
            continue
        row, col = divmod(pix, cols)
        mosaic[row * px:(row + 1) * px, col * px:(col + 1) * px] = np.flipud(_shrink(_fits_tile(data), px))
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.flipud(mosaic)).writeto(buffer)
    return buffer.getvalue()


def _build_image(tiles: list[bytes | None], cols: int, rows: int, px: int, fmt: str) -> bytes:
    mode = "RGB" if fmt == "jpeg" else "RGBA"
    mosaic = Image.new(mode, (cols * px, rows * px), (0, 0, 0) if mode == "RGB" else (0, 0, 0, 0))
    for pix, data in enumerate(tiles):
        if data is None:
            continue
        with Image.open(io.BytesIO(data)) as img:
            if max(img.size) > MAX_TILE_SIDE:
                raise ValueError("tile too large")
            tile = img.convert(mode)
        if tile.size != (px, px):
            tile = tile.resize((px, px), Image.Resampling.BOX)
        row, col = divmod(pix, cols)
        mosaic.paste(tile, (col * px, row * px))
    buffer = io.BytesIO()
    mosaic.save(buffer, format={"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt])
    return buffer.getvalue()


def build_allsky(get_tile: Callable[[int], bytes | None], *, order: int, fmt: str, tile_width: int) -> bytes:
    """Assemble the Allsky image of ``order`` from its tiles.

    Parameters
    ----------
    get_tile
        ``pix → bytes`` of the tile ``(order, pix)``, ``None`` when missing (left blank: transparent,
        black for JPEG, NaN for FITS). Called from a few threads at once.
    order
        0 to 3.
    fmt
        ``png``, ``jpeg``, ``webp`` or ``fits``.
    tile_width
        The survey's tile width (pixels).
    """
    if not 0 <= order <= MAX_ALLSKY_ORDER:
        raise InvalidRequest(f"An Allsky image can be built for orders 0 to {MAX_ALLSKY_ORDER} only.")
    cols, rows, px = allsky_layout(order, tile_width)
    tiles = _fetch_all(get_tile, 12 * 4**order)
    if not any(t is not None for t in tiles):
        raise NotFound(f"The survey has no tiles at order {order} to build an Allsky from.")
    try:
        if fmt == "fits":
            return _build_fits(tiles, cols, rows, px)
        return _build_image(tiles, cols, rows, px, fmt)
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"Cannot build the Allsky image: unreadable tile ({type(exc).__name__}).") from None

"""Opening a FITS image for a JS9 analysis task: Stokes plane, channels, beam, CASA axis layout.

The FITS reader (:mod:`app.io.fits_reader`) presents every image as a ``(z, y, x)`` float32
cube (depth 1 for images) and takes plane 0 of every other axis. A task may ask for another
Stokes plane (``parameters.stokes``); :func:`open_view` then points the reader at that plane.

Positions are reported the way CASA reports them (``minpos``, ``blc`` …): 0-based pixel
indices over *all* the FITS axes in FITS order, e.g. ``[x, y, channel, stokes]`` for a 4-D cube,
so they compare one to one with casatasks.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from app.io.fits_reader import CubeSource, FitsImage, open_fits_image
from app.io.spectral import SpectralAxis, spectral_axis
from app.services.js9.errors import Js9BadRequest

#: FITS STOKES axis codes (Greisen & Calabretta 2002, table 7).
STOKES_CODES: dict[int, str] = {
    1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR",
    -5: "XX", -6: "YY", -7: "XY", -8: "YX",
}
#: ``A_beam / (θ_maj·θ_min)`` for a Gaussian beam: ``π / (4 ln 2)``.
GAUSSIAN_BEAM_FACTOR = math.pi / (4.0 * math.log(2.0))


@dataclass
class ImageView:
    """An opened image with the plane selection of one task.

    Attributes
    ----------
    path
        The resolved file.
    image
        The opened FITS image (header, WCS, reader).
    source
        Block reader presenting ``(z, y, x)`` float32 with the chosen Stokes plane.
    planes
        FITS axis → plane index of every axis that is not x, y or z (0-based).
    stokes
        Label of the Stokes plane used (``None`` when the image has no Stokes axis).
    z_fixed
        When the Stokes axis is the image's z axis, the plane of the chosen Stokes (else ``None``).
    """

    path: Path
    image: FitsImage
    source: CubeSource
    planes: dict[int, int]
    stokes: str | None
    z_fixed: int | None = None
    owned: bool = True

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)`` of the presented cube."""
        return self.source.shape

    @property
    def header(self) -> fits.Header:
        return self.image.header

    @property
    def is_cube(self) -> bool:
        """True when the image has a z axis with more than one plane."""
        return self.image.wcs_info.roles.z is not None and self.shape[0] > 1 and self.z_fixed is None

    @property
    def bunit(self) -> str:
        return str(self.header.get("BUNIT", "") or "").strip()

    def close(self) -> None:
        """Close the file unless it belongs to an :class:`ImageCache`."""
        if self.owned:
            self.image.close()

    # -- axes ------------------------------------------------------------------------------------

    def casa_position(self, z: int, y: int, x: int) -> list[int]:
        """0-based pixel position over all FITS axes (FITS order), as CASA reports it."""
        roles = self.image.wcs_info.roles
        naxis = self.image.source.raw.ndim
        out = []
        for axis in range(naxis):
            if axis == roles.x:
                out.append(int(x))
            elif axis == roles.y:
                out.append(int(y))
            elif axis == roles.z:
                out.append(int(z) if self.z_fixed is None else self.z_fixed)
            else:
                out.append(int(self.planes.get(axis, 0)))
        return out

    def spectral(self) -> SpectralAxis:
        """Channel coordinates (km/s for velocity axes and frequency axes with a rest frequency)."""
        return spectral_axis(self.image.wcs_info, self.shape[0], rest_freq_hz=rest_frequency(self.header))

    def pixel_area_deg2(self) -> float | None:
        """Solid angle of one pixel in deg² (``|det|`` of the celestial pixel-scale matrix)."""
        area = self.image.wcs_info.celestial_pixel_area_deg2  # computed once per open image
        if area is not None:
            return area
        d1, d2 = self.header.get("CDELT1"), self.header.get("CDELT2")
        try:
            area = abs(float(d1) * float(d2))
        except (TypeError, ValueError):
            return None
        return area if area > 0 else None

    def beam_area_pixels(self) -> float | None:
        """Gaussian beam area in pixels, ``π·θ_maj·θ_min / (4 ln 2 · |Δx·Δy|)`` (``None`` without a beam)."""
        try:
            bmaj, bmin = float(self.header["BMAJ"]), float(self.header["BMIN"])
        except (KeyError, TypeError, ValueError):
            return None
        pixel = self.pixel_area_deg2()
        if not (bmaj > 0 and bmin > 0 and pixel):
            return None
        return GAUSSIAN_BEAM_FACTOR * bmaj * bmin / pixel

    def flux_scale(self) -> tuple[float, str] | None:
        """``(1 / A_beam, "Jy")`` for Jy/beam data with a beam, ``(1, "Jy")`` for Jy/pixel; else ``None``."""
        unit = self.bunit.lower().replace(" ", "")
        if unit in ("jy/beam", "jy/bm"):
            area = self.beam_area_pixels()
            return (1.0 / area, "Jy") if area else None
        if unit in ("jy/pixel", "jy/pix"):
            return 1.0, "Jy"
        return None


def rest_frequency(header: fits.Header) -> float | None:
    """RESTFRQ (or legacy RESTFREQ) in Hz, ``None`` when absent or not positive."""
    for key in ("RESTFRQ", "RESTFREQ"):
        try:
            value = float(header[key])
        except (KeyError, TypeError, ValueError):
            continue
        if value > 0:
            return value
    return None


def _stokes_axis(image: FitsImage) -> int | None:
    for axis, ctype in enumerate(image.wcs_info.header_ctype):
        if ctype.strip().upper().startswith("STOKES"):
            return axis
    return None


def _stokes_labels(header: fits.Header, axis: int, n: int) -> list[str]:
    k = axis + 1
    try:
        crval, cdelt = float(header.get(f"CRVAL{k}", 1.0)), float(header.get(f"CDELT{k}", 1.0))
        crpix = float(header.get(f"CRPIX{k}", 1.0))
    except (TypeError, ValueError):
        return [str(p) for p in range(n)]
    labels = []
    for p in range(n):
        code = int(round(crval + (p + 1 - crpix) * cdelt))
        labels.append(STOKES_CODES.get(code, str(code)))
    return labels


def resident_bytes(image: FitsImage) -> int:
    """Bytes of RAM an open image holds: 0 when its data is memory-mapped (plain FITS, and
    ``.fits.gz`` through the on-disk gzip cache), else the size of its in-memory array (e.g. a
    tile-compressed image, which astropy decompresses)."""
    raw = image.source.raw
    node = raw
    while node is not None:
        if isinstance(node, (np.memmap, mmap.mmap)):
            return 0
        node = getattr(node, "base", None)
    return int(raw.nbytes)


class ImageCache:
    """Opened FITS images kept between requests: LRU of ``capacity`` entries and ``max_bytes`` of RAM.

    A JS9 user runs many tasks on the image on screen; parsing its header and WCS (and, for a
    ``.fits.gz``, finding its inflated copy) once instead of per request is most of a small task's
    time. An edited file has a new key (path, mtime, size), so it is opened afresh. Images weigh
    :func:`resident_bytes`; the least recently used go until both bounds hold, and an image heavier
    than ``max_bytes`` alone is not kept. Evicted images are not closed here (a request may still
    be reading one); the file goes when the last reference does.
    """

    def __init__(self, capacity: int = 8, max_bytes: int = 256 << 20) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int, int], FitsImage] = OrderedDict()
        self._weights: dict[tuple[str, int, int], int] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> FitsImage:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
                return image
        image = open_fits_image(path)
        weight = resident_bytes(image)
        if weight > self.max_bytes:
            return image
        with self._lock:
            self._items[key] = image
            self._weights[key] = weight
            self._items.move_to_end(key)
            while len(self._items) > self.capacity or self.held_bytes() > self.max_bytes:
                old, _ = self._items.popitem(last=False)
                self._weights.pop(old, None)
        return image

    def held_bytes(self) -> int:
        """RAM held by the cached images (sum of :func:`resident_bytes`)."""
        return sum(self._weights.values())

    def __contains__(self, image: FitsImage) -> bool:
        return any(item is image for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def open_view(path: Path, *, stokes: str | None = None, cache: ImageCache | None = None) -> ImageView:
    """Open ``path`` (through ``cache`` when given) and select the Stokes plane ``stokes`` (default: the first).

    Raises
    ------
    Js9BadRequest
        The requested Stokes parameter is not in the image.
    app.errors.InvalidRequest
        The file is not a readable FITS image (from the reader).
    """
    image = cache.get(path) if cache is not None else open_fits_image(path)
    owned = cache is None or image not in cache  # an image too heavy for the cache is this view's own
    try:
        view = _select_stokes(path, image, stokes)
    except BaseException:
        if owned:
            image.close()
        raise
    view.owned = owned
    return view


def _select_stokes(path: Path, image: FitsImage, stokes: str | None) -> ImageView:
    roles = image.wcs_info.roles
    planes = dict(roles.dropped)
    axis = _stokes_axis(image)
    wanted = (stokes or "").strip().upper()
    if axis is None:
        if wanted not in ("", "I"):
            raise Js9BadRequest(f"Invalid parameter 'stokes': '{stokes}' is not in the image (it has no Stokes axis)")
        return ImageView(path, image, image.source, planes, None)
    n = int(image.source.raw.shape[image.source.raw.ndim - 1 - axis])
    labels = _stokes_labels(image.header, axis, n)
    if not wanted:
        plane = 0
    elif wanted in labels:
        plane = labels.index(wanted)
    else:
        raise Js9BadRequest(f"Invalid parameter 'stokes': '{stokes}' is not in the image (available: {labels})")
    if axis == roles.z:
        return ImageView(path, image, image.source, planes, labels[plane], z_fixed=plane)
    planes[axis] = plane
    if plane == 0:
        return ImageView(path, image, image.source, planes, labels[plane])
    index = list(image.source.index)
    index[image.source.raw.ndim - 1 - axis] = plane
    source = dataclasses.replace(image.source, index=tuple(index))
    return ImageView(path, image, source, planes, labels[plane])


_RANGE = re.compile(r"^\s*(\d+)\s*(?:~\s*(\d+)\s*)?$")


def parse_chans(value: object, view: ImageView) -> range:
    """Channel selection: ``None``/``""`` (all), an int, ``"a"`` or ``"a~b"`` (CASA syntax, 0-based, inclusive).

    Raises
    ------
    Js9BadRequest
        Malformed or out-of-range selection.
    """
    nz = view.shape[0]
    if view.z_fixed is not None:
        return range(view.z_fixed, view.z_fixed + 1)
    if value is None or value == "":
        return range(nz)
    if isinstance(value, bool):
        raise Js9BadRequest("Invalid parameter 'chans': expected a channel or 'a~b'")
    if isinstance(value, int):
        lo = hi = value
    else:
        match = _RANGE.match(str(value))
        if not match:
            raise Js9BadRequest(f"Invalid parameter 'chans': '{value}' (expected a channel or 'a~b')")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
    if not (0 <= lo <= hi < nz):
        raise Js9BadRequest(f"Invalid parameter 'chans': '{value}' is outside channels 0~{nz - 1}")
    return range(lo, hi + 1)


def single_plane(value: object, view: ImageView, task: str) -> int:
    """The one channel a 2-D task (imfit, imview) works on: ``chans`` (default 0)."""
    chans = parse_chans(0 if value in (None, "") else value, view)
    if len(chans) != 1:
        raise Js9BadRequest(f"Invalid parameter 'chans': {task} works on one channel; give a single channel")
    return chans.start

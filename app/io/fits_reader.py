"""FITS image/cube reader: memmap, byte order and BSCALE/BZERO/BLANK normalised per read.

The kernels only ever see native-endian, C-contiguous float32 arrays with NaN for
blanks. :class:`CubeSource` keeps the raw (big-endian, possibly scaled-integer)
memmap and converts exactly the block a caller asks for, so no request copies a
whole cube when it does not need to. Images are cubes of depth 1.

Gzip-compressed FITS (``.fits.gz``) cannot be memory-mapped: it is inflated once,
streaming, into the bounded on-disk cache of :mod:`app.io.gzip_cache` (its size checked
from the headers first) and that copy is memory-mapped, so no request inflates it in RAM.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import math
import mmap
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from numpy.lib.array_utils import byte_bounds

from app.errors import InvalidRequest
from app.io import gzip_cache
from app.io.wcs_info import WcsInfo, analyse_wcs

_GZIP_MAGIC = b"\x1f\x8b"
_IMAGE_HDUS = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)


@dataclass(frozen=True)
class RawBlock:
    """A block of stored FITS data (:meth:`CubeSource.read_raw`): view and scaling, no conversion."""

    data: np.ndarray  # (nz, ny, nx) view of the memmap, stored byte order and type
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None


@dataclass
class CubeSource:
    """Block reader over the raw FITS array, presenting it as a ``(z, y, x)`` float32 cube.

    Attributes
    ----------
    raw
        The HDU data as stored (numpy axis order = reversed FITS order), usually a memmap.
    index
        Indexing tuple into ``raw`` for the dropped (degenerate or plane-0) axes; kept axes hold ``None``.
    order
        Positions, among the kept axes of ``raw``, of z, y and x (``z`` is ``None`` for images).
    """

    raw: np.ndarray
    index: tuple
    order: tuple[int | None, int, int]
    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None
    #: ``(file path, HDU index)`` the data is memory-mapped from (what a Dask worker opens), else ``None``.
    origin: tuple[str, int] | None = field(default=None, compare=False)
    shape: tuple[int, int, int] = field(init=False)
    _map: tuple[mmap.mmap, int] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        kept = [n for n, ix in zip(self.raw.shape, self.index, strict=True) if ix is None]
        zpos, ypos, xpos = self.order
        self.shape = (kept[zpos] if zpos is not None else 1, kept[ypos], kept[xpos])
        self._map = _mapping_of(self.raw)

    @property
    def nbytes(self) -> int:
        """Size in bytes of the float32 cube this source presents."""
        return 4 * math.prod(self.shape)

    def read(self, z: slice = slice(None), y: slice = slice(None), x: slice = slice(None)) -> np.ndarray:
        """Read a block as a native C-contiguous float32 array of shape (nz, ny, nx).

        Applies ``value = raw·BSCALE + BZERO`` and maps ``BLANK`` (integer data) and
        nothing else to NaN. Slices may use steps (strided preview).
        """
        zpos, ypos, xpos = self.order
        kept_slices: list[slice] = [slice(None)] * sum(ix is None for ix in self.index)
        kept_slices[ypos] = y
        kept_slices[xpos] = x
        if zpos is not None:
            kept_slices[zpos] = z
        it = iter(kept_slices)
        full = tuple(next(it) if ix is None else ix for ix in self.index)
        block = self.raw[full]
        axes = [a for a in (zpos, ypos, xpos) if a is not None]
        block = np.transpose(block, axes)
        if zpos is None:
            block = block[np.newaxis]
        out = np.empty(block.shape, dtype=np.float32)
        self._copy(block, out)
        if self.bscale != 1.0:
            out *= np.float32(self.bscale)
        if self.bzero != 0.0:
            out += np.float32(self.bzero)
        return out

    def read_raw(self, z: slice = slice(None), y: slice = slice(None)) -> RawBlock:
        """The stored data of a block, without conversion: a ``(nz, ny, nx)`` view plus its scaling.

        No copy is made: the view is (a transposed slice of) the memmap, in the file's byte order
        and type (e.g. ``>f4``, ``>i2``). ``value = raw·BSCALE + BZERO`` with ``BLANK`` (integer
        data) meaning blank, as :meth:`read` applies them; the compiled kernels apply them inline.
        Slices have step 1.
        """
        zpos, ypos, xpos = self.order
        kept_slices: list[slice] = [slice(None)] * sum(ix is None for ix in self.index)
        kept_slices[ypos] = y
        if zpos is not None:
            kept_slices[zpos] = z
        it = iter(kept_slices)
        block = self.raw[tuple(next(it) if ix is None else ix for ix in self.index)]
        block = np.transpose(block, [a for a in (zpos, ypos, xpos) if a is not None])
        if zpos is None:
            block = block[np.newaxis]
        return RawBlock(block, self.bscale, self.bzero, self.blank)

    def release(self, view: np.ndarray) -> None:
        """Unmap from this process the file pages under ``view`` (a view of :attr:`raw`, e.g. a piece of
        :meth:`read_raw` a compiled kernel is done with): ``madvise(MADV_DONTNEED)``, as :meth:`read`
        does after each piece; the pages stay in the page cache. No-op when the data is not memory-mapped."""
        if self._map is None or view.size == 0:
            return
        mm, base = self._map
        lo, hi = byte_bounds(view)
        start = (lo - base) // mmap.PAGESIZE * mmap.PAGESIZE
        with contextlib.suppress(ValueError, OSError):
            mm.madvise(mmap.MADV_DONTNEED, start, hi - base - start)

    def plane(self, index: int) -> np.ndarray:
        """One spectral plane (y, x) as float32."""
        return self.read(z=slice(index, index + 1))[0]

    def _copy(self, block: np.ndarray, out: np.ndarray) -> None:
        """``out[...] = block`` (BLANK → NaN); from a memmap, in pieces of ≤ :data:`RELEASE_BYTES` of file.

        After each piece the file pages just read are unmapped from this process
        (``madvise(MADV_DONTNEED)``; they stay in the page cache, so a re-read is a minor fault).
        Without this a read of a few pixels per plane maps whole large folios of every plane,
        and a region read across all channels of a big cube shows the whole file in the RSS.
        """
        blank = self.blank if self.blank is not None and block.dtype.kind in "iu" else None
        if self._map is None or block.size == 0:
            pieces = [(slice(None),) * block.ndim]
        else:
            axis = int(np.argmax(np.abs(block.strides)))
            per = max(1, RELEASE_BYTES // max(1, abs(block.strides[axis])))
            pieces = [tuple(slice(i, i + per) if a == axis else slice(None) for a in range(block.ndim))
                      for i in range(0, block.shape[axis], per)]
        for sl in pieces:
            piece = block[sl]
            np.copyto(out[sl], piece, casting="unsafe")
            if blank is not None:
                out[sl][piece == blank] = np.nan
            if self._map is not None:
                mm, base = self._map
                lo, hi = byte_bounds(piece)
                start = (lo - base) // mmap.PAGESIZE * mmap.PAGESIZE
                with contextlib.suppress(ValueError, OSError):
                    mm.madvise(mmap.MADV_DONTNEED, start, hi - base - start)


#: File bytes mapped at a time by :meth:`CubeSource.read` before they are unmapped again.
RELEASE_BYTES = 32 << 20


def _mapping_of(raw: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The ``mmap`` under ``raw`` and its start address, or ``None`` when ``raw`` is not file-mapped."""
    node = raw
    while node is not None and not isinstance(node, mmap.mmap):
        node = getattr(node, "base", None)
    if node is None or not hasattr(node, "madvise"):
        return None
    try:
        view = np.frombuffer(node, dtype=np.uint8, count=1)  # released at once: astropy must close the map
    except (TypeError, ValueError, BufferError):
        return None
    start = int(view.__array_interface__["data"][0])
    del view
    return node, start


@dataclass
class FitsImage:
    """An opened FITS image HDU: its header, WCS analysis and block reader."""

    path: Path
    hdul: fits.HDUList
    hdu_index: int
    header: fits.Header
    wcs_info: WcsInfo
    source: CubeSource
    compressed: bool

    def close(self) -> None:
        self.hdul.close()


def check_fits_magic(path: Path) -> bool:
    """Return True for gzip files; raise InvalidRequest for empty or non-FITS files."""
    try:
        with path.open("rb") as handle:
            head = handle.read(80)
    except OSError as exc:
        if out_of_files(exc):
            raise InvalidRequest(TOO_MANY_FILES) from None
        raise InvalidRequest(f"Cannot read FITS file {path.name}: {exc.strerror or exc}") from None
    if not head:
        raise InvalidRequest(f"File is empty: {path.name}")
    compressed = head[:2] == _GZIP_MAGIC
    if compressed:
        try:
            with gzip.open(path, "rb") as handle:
                head = handle.read(80)
        except OSError as exc:
            raise InvalidRequest(f"Corrupt gzip file {path.name}: {exc}") from None
    if not head.startswith(b"SIMPLE  =") and not head.startswith(b"SIMPLE ="):
        raise InvalidRequest(f"Not a FITS file: {path.name}")
    return compressed


def _first_image_hdu(hdul: fits.HDUList, name: str) -> int:
    saw_table = False
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, _IMAGE_HDUS):
            naxes = [hdu.header.get(f"ZNAXIS{k}" if isinstance(hdu, fits.CompImageHDU) else f"NAXIS{k}", 0)
                     for k in range(1, int(hdu.header.get("NAXIS", 0)) + 1)]
            if isinstance(hdu, fits.CompImageHDU):
                naxes = list(hdu.shape[::-1])
            if len(naxes) >= 2 and all(int(n) > 0 for n in naxes):
                return i
        else:
            saw_table = True
    if saw_table:
        raise InvalidRequest(f"No image data in {name}: it holds only tables. Open it as a catalogue.")
    raise InvalidRequest(f"No image data in {name}.")


def _check_size(path: Path, hdu: fits.hdu.base._BaseHDU, name: str) -> None:
    if isinstance(hdu, fits.CompImageHDU):
        return
    info = hdu.fileinfo()
    expected = abs(int(hdu.header["BITPIX"])) // 8 * math.prod(hdu.shape)
    available = path.stat().st_size - int(info["datLoc"])
    if available < expected:
        raise InvalidRequest(
            f"FITS file is truncated: {name} needs {expected} data bytes, has {max(available, 0)}."
        )


#: The error a client gets when the server is out of file descriptors (EMFILE/ENFILE).
TOO_MANY_FILES = ("Too many open files on the server: close datasets (DELETE /v1/datasets/{id}) or raise the "
                  "server's file-descriptor limit (ulimit -n).")


def out_of_files(exc: BaseException) -> bool:
    """Whether ``exc`` (or its cause) is the process or the system running out of file descriptors."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def check_scaling(header: fits.Header, name: str) -> None:
    """Refuse a ``BSCALE`` that cannot scale data: zero, non-finite or not a number.

    FITS stores ``physical = BZERO + BSCALE·raw``; with ``BSCALE = 0`` every pixel would equal
    ``BZERO`` and the stored values would be lost, so the file is refused with a clear message
    instead of being read as if ``BSCALE`` were 1.

    Raises
    ------
    InvalidRequest
        Naming the file and the offending value.
    """
    if "BSCALE" not in header:
        return
    raw = header["BSCALE"]
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidRequest(f"Invalid BSCALE {raw!r} in {name}: it must be a non-zero number.") from None
    if value == 0.0 or not math.isfinite(value):
        raise InvalidRequest(
            f"BSCALE = {raw} in {name}: physical = BZERO + BSCALE*raw would lose every stored value; "
            "the file must have a finite, non-zero BSCALE."
        )


def open_fits_image(path: Path) -> FitsImage:
    """Open the first image HDU with data of a FITS file (plain or gzip) for block reading.

    Raises
    ------
    InvalidRequest
        Empty, truncated, non-FITS or table-only files, with a message naming the problem.
    """
    compressed = check_fits_magic(path)
    if not compressed:
        return _open_plain(path, path, compressed=False)
    with gzip_cache.current().lease(path) as inflated:  # pinned until the memmap is open
        return _open_plain(path, inflated, compressed=True)


def _open_plain(path: Path, local: Path, *, compressed: bool) -> FitsImage:
    """Open ``local`` (``path`` itself, or its inflated copy) with memmap; errors name ``path``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(local, memmap=True, do_not_scale_image_data=True, mode="readonly")
            hdul.verify("silentfix+ignore")
            index = _first_image_hdu(hdul, path.name)
    except InvalidRequest:
        raise
    except Exception as exc:
        if out_of_files(exc):
            raise InvalidRequest(TOO_MANY_FILES) from None
        raise InvalidRequest(f"Cannot read FITS file {path.name}: {exc}") from None
    hdu = hdul[index]
    try:
        _check_size(local, hdu, path.name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = hdu.data
        if raw is None:
            raise InvalidRequest(f"No image data in {path.name}.")
        header = hdu.header.copy()
        if isinstance(hdu, fits.CompImageHDU):
            header = fits.ImageHDU(data=None, header=hdu.header).header
        check_scaling(header, path.name)
        shape_fits = tuple(int(n) for n in raw.shape[::-1])
        info = analyse_wcs(header, shape_fits)
    except InvalidRequest:
        hdul.close()
        raise
    except Exception as exc:
        hdul.close()
        raise InvalidRequest(f"Cannot read FITS data of {path.name}: {exc}") from None
    source = _make_source(raw, header, info, scaled_by_astropy=isinstance(hdu, fits.CompImageHDU))
    source.origin = (str(Path(local).absolute()), index)
    return FitsImage(path, hdul, index, header, info, source, compressed)


def _make_source(raw: np.ndarray, header: fits.Header, info: WcsInfo, *, scaled_by_astropy: bool) -> CubeSource:
    naxis = raw.ndim
    roles = info.roles
    index: list[int | None] = [None] * naxis
    for fits_axis, plane in roles.dropped.items():
        index[naxis - 1 - fits_axis] = plane
    kept_numpy = [ax for ax in range(naxis) if index[ax] is None]

    def position(fits_axis: int | None) -> int | None:
        return None if fits_axis is None else kept_numpy.index(naxis - 1 - fits_axis)

    order = (position(roles.z), position(roles.y), position(roles.x))
    bscale = 1.0 if scaled_by_astropy else float(header.get("BSCALE", 1.0) or 1.0)
    bzero = 0.0 if scaled_by_astropy else float(header.get("BZERO", 0.0) or 0.0)
    blank = header.get("BLANK") if raw.dtype.kind in "iu" else None
    return CubeSource(raw, tuple(index), order, bscale, bzero, int(blank) if blank is not None else None)

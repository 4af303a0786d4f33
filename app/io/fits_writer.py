"""Atomic FITS writing: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits


def write_fits_atomic(path: Path, data: np.ndarray, header: fits.Header) -> Path:
    """Write ``data`` with ``header`` to ``path`` via a temporary file in the same directory + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.PrimaryHDU(data=np.asarray(data, dtype=">f4"), header=header).writeto(tmp, overwrite=True)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def unique_output_path(directory: Path, stem: str, suffix: str = ".fits") -> Path:
    """``directory/stem.fits``, or ``stem_1.fits``, ``stem_2.fits`` ... if taken."""
    candidate = directory / f"{stem}{suffix}"
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem}_{counter}{suffix}"
        counter += 1
    return candidate


class CubeWriter:
    """Write a (nz, ny, nx) float32 FITS cube slab by slab through a memmap, atomically.

    The header and a zero-filled data area are laid out in a temporary file next to the target;
    :meth:`write` fills y-slabs; :meth:`commit` flushes, fsyncs and renames it into place. On an
    exception inside the ``with`` block the temporary file is removed, so no half-written file
    ever appears under the final name. Memory use is one slab.
    """

    def __init__(self, path: Path, header: fits.Header, shape: tuple[int, int, int]) -> None:
        self.path = path
        self.shape = shape
        full = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 3)])
        for i, n in enumerate(reversed(shape), start=1):
            full[f"NAXIS{i}"] = n
        structural = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "BSCALE", "BZERO", "BLANK", "END"}
        for card in header.cards:
            if card.keyword not in structural and not card.keyword.startswith("NAXIS"):
                full.append(card, end=True)
        self._header_bytes = full.tostring(padding=True).encode("ascii")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        os.close(fd)
        self._tmp = Path(name)
        nbytes = 4 * shape[0] * shape[1] * shape[2]
        padded = -(-nbytes // 2880) * 2880
        with self._tmp.open("wb") as handle:
            handle.write(self._header_bytes)
            handle.truncate(len(self._header_bytes) + padded)
        self._data = np.memmap(self._tmp, dtype=">f4", mode="r+", offset=len(self._header_bytes), shape=shape)

    def write(self, ys: slice, block: np.ndarray) -> None:
        """Store a ``(nz, rows, nx)`` block at rows ``ys``."""
        self._data[:, ys, :] = block

    def commit(self) -> Path:
        self._data.flush()
        del self._data
        with self._tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if hasattr(self, "_data"):
            del self._data
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> CubeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

"""Atomic FITS writing: a crash never leaves a half-written file under the final name.

Every file is written to a hidden temporary ``.<name>.<random>.<pid>.part`` in the target
directory, fsynced, then moved into place. With ``exclusive=True`` the move never replaces an
existing file: the final name is taken with :func:`os.link` (which fails if the name exists), so
two concurrent saves that chose the same name (``unique_output_path`` only checks) end under
distinct names (``stem.fits``, ``stem_1.fits`` ...), and the path returned is the file written.
A failure removes the temporary file; a process killed mid-write leaves it behind, and
:func:`sweep_partial_files` (run at start-up) removes every ``.part`` whose writer is gone.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits

log = logging.getLogger("visivo.io")

PART_SUFFIX = ".part"
_PART_NAME = re.compile(r"^\..+\.part$")
#: Errors of :func:`os.link` on file systems without hard links (then an O_EXCL placeholder is used).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def temporary_path(path: Path) -> Path:
    """Create (empty, mode 0600) and return a hidden ``.part`` file next to ``path`` tagged with this pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}{PART_SUFFIX}", dir=path.parent)
    os.close(fd)
    return Path(tmp_name)


def _numbered(path: Path, counter: int) -> Path:
    name = path.name
    suffix = ".fits" if name.endswith(".fits") else path.suffix
    stem = name[: len(name) - len(suffix)] if suffix else name
    return path.with_name(f"{stem}_{counter}{suffix}")


def commit_exclusive(tmp: Path, path: Path) -> Path:
    """Move ``tmp`` to ``path`` or, if taken, to the first free ``stem_N`` name; never replaces a file.

    Returns
    -------
    Path
        The name the file now has.
    """
    candidate, counter = path, 0
    while True:
        try:
            os.link(tmp, candidate)
        except FileExistsError:
            pass
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            try:  # no hard links here: reserve the name exclusively, then replace the placeholder
                os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            else:
                os.replace(tmp, candidate)
                return candidate
        else:
            tmp.unlink()
            return candidate
        counter += 1
        candidate = _numbered(path, counter)


def _fsync(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def write_fits_atomic(path: Path, data: np.ndarray, header: fits.Header, *, exclusive: bool = False) -> Path:
    """Write ``data`` (as big-endian float32) with ``header`` atomically: :func:`write_hdulist_atomic`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        primary = fits.PrimaryHDU(data=np.asarray(data, dtype=">f4"), header=header)
    return write_hdulist_atomic(path, [primary], exclusive=exclusive)


def write_hdulist_atomic(path: Path, hdus: list, *, exclusive: bool = False) -> Path:
    """Write ``hdus`` (a primary HDU, then any extensions) via a temporary file in the same directory,
    flushed to disk, then move it into place; the temporary file never outlives a failure.

    Parameters
    ----------
    exclusive
        Never replace an existing file: end under ``path`` or the first free ``stem_N`` name.

    Returns
    -------
    Path
        The file written (differs from ``path`` only when ``exclusive`` found the name taken).
    """
    tmp = temporary_path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.HDUList(hdus).writeto(tmp, overwrite=True)
        _fsync(tmp)
        if exclusive:
            return commit_exclusive(tmp, path)
        os.replace(tmp, path)
        return path
    finally:
        if tmp.exists():
            tmp.unlink()


def unique_output_path(directory: Path, stem: str, suffix: str = ".fits") -> Path:
    """``directory/stem.fits``, or ``stem_1.fits``, ``stem_2.fits`` ... if taken.

    Only a proposal: write with ``exclusive=True`` so a name taken meanwhile is never overwritten.
    """
    candidate = directory / f"{stem}{suffix}"
    counter = 1
    while candidate.exists():
        candidate = directory / f"{stem}_{counter}{suffix}"
        counter += 1
    return candidate


def _writer_alive(name: str) -> bool:
    """Whether the process whose pid tags a ``.part`` name (``….<pid>.part``) still runs."""
    tag = name[: -len(PART_SUFFIX)].rsplit(".", 1)[-1]
    if not tag.isdigit():
        return False
    pid = int(tag)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def sweep_partial_files(directory: Path) -> int:
    """Remove the hidden ``.part`` files left under ``directory`` by writers that died (kill -9, power loss).

    A ``.part`` whose name carries the pid of a running process (another server sharing the
    directory, or this one) is kept. Symbolic links are not followed. Returns the number removed.
    """
    removed = 0
    if not directory.is_dir():
        return 0
    for folder, _dirs, names in os.walk(directory, followlinks=False):
        for name in names:
            if not _PART_NAME.match(name) or _writer_alive(name):
                continue
            target = Path(folder) / name
            try:
                if target.is_symlink() or not target.is_file():
                    continue
                target.unlink()
                removed += 1
            except OSError:
                continue
    if removed:
        log.info("Removed %d partial file(s) left under %s by interrupted writes", removed, directory)
    return removed


class CubeWriter:
    """Write a (nz, ny, nx) float32 FITS cube slab by slab through a memmap, atomically.

    The header and a zero-filled data area are laid out in a temporary file next to the target;
    :meth:`write` fills y-slabs; :meth:`commit` flushes, fsyncs and moves it into place (never over
    an existing file when ``exclusive``; :attr:`path` is then the name actually used). On an
    exception inside the ``with`` block, or a block left without :meth:`commit`, the temporary file
    is removed, so no half-written file ever appears under the final name. Memory use is one slab.
    """

    def __init__(self, path: Path, header: fits.Header, shape: tuple[int, int, int], *,
                 exclusive: bool = False) -> None:
        self.path = path
        self.shape = shape
        self.exclusive = exclusive
        self.committed = False
        full = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 3)])
        for i, n in enumerate(reversed(shape), start=1):
            full[f"NAXIS{i}"] = n
        structural = {"SIMPLE", "BITPIX", "NAXIS", "EXTEND", "BSCALE", "BZERO", "BLANK", "END"}
        for card in header.cards:
            if card.keyword not in structural and not card.keyword.startswith("NAXIS"):
                full.append(card, end=True)
        self._header_bytes = full.tostring(padding=True).encode("ascii")
        self._tmp = temporary_path(path)
        try:
            nbytes = 4 * shape[0] * shape[1] * shape[2]
            padded = -(-nbytes // 2880) * 2880
            with self._tmp.open("wb") as handle:
                handle.write(self._header_bytes)
                handle.truncate(len(self._header_bytes) + padded)
            self._data = np.memmap(self._tmp, dtype=">f4", mode="r+", offset=len(self._header_bytes), shape=shape)
        except BaseException:
            self.abort()
            raise

    def write(self, ys: slice, block: np.ndarray) -> None:
        """Store a ``(nz, rows, nx)`` block at rows ``ys``."""
        self._data[:, ys, :] = block

    def commit(self) -> Path:
        """Flush, fsync and move the file into place; returns its final name."""
        try:
            self._data.flush()
            del self._data
            _fsync(self._tmp)
            if self.exclusive:
                self.path = commit_exclusive(self._tmp, self.path)
            else:
                os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.committed = True
        return self.path

    def abort(self) -> None:
        if hasattr(self, "_data"):
            del self._data
        if self._tmp.exists():
            self._tmp.unlink()

    def __enter__(self) -> CubeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self.committed:
            self.abort()

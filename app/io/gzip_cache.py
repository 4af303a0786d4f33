"""Gzip-compressed FITS, inflated once into a bounded on-disk cache and memory-mapped from there.

A ``.fits.gz`` cannot be memory-mapped, and astropy would inflate it into RAM (a 2 MB file of
zeros became 4.4 GB per open). Instead :meth:`GzipCache.lease` streams the decompressed bytes
(1 MiB at a time) into ``<output>/.gzip_cache/<key>.fits`` and hands that path to the FITS reader,
which memory-maps it like any plain file.

- **Size first:** :func:`inflated_size` reads only the gzip stream's header blocks (and skips,
  streaming, the data of HDUs before the image) to learn the inflated size of every HDU up to
  the first image HDU with data: ``header blocks + ceil(|BITPIX|/8 · GCOUNT · (PCOUNT + ΠNAXISn) / 2880)``
  blocks each. A file past ``VISIVO_MAX_INFLATED_MEGABYTES`` (or past the whole cache,
  ``VISIVO_GZIP_CACHE_MEGABYTES``) is refused before anything is written. Only that prefix
  (a valid FITS file ending with the image HDU) is inflated.
- **Cache:** keyed by the resolved path, mtime (ns) and size of the compressed file (an edited
  file gets a new entry); least recently used files are deleted until the new one fits (an
  entry in use by an open dataset stays mapped after deletion: the kernel frees it on close).
  Every write goes to a temporary name and is renamed into place, so a crash never leaves a
  partial file under a final name; stale temporaries are removed at start-up.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

from astropy.io import fits

from app.errors import InvalidRequest

BLOCK = 2880
_COPY = 1 << 20
#: Header bytes read before a missing END card is an error (1000 blocks).
MAX_HEADER_BYTES = 1000 * BLOCK


def _mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def _read_exact(stream, n: int) -> bytes:  # noqa: ANN001
    data = stream.read(n)
    return data if data is not None else b""


def _read_header(stream, name: str) -> tuple[fits.Header, int] | None:  # noqa: ANN001
    """The next header of the stream and its length in bytes (``None`` at a clean end of file)."""
    blocks: list[bytes] = []
    while True:
        block = _read_exact(stream, BLOCK)
        if not block and not blocks:
            return None
        if len(block) < BLOCK:
            raise InvalidRequest(f"FITS file is truncated: {name} ends inside a header.")
        blocks.append(block)
        if any(block[i : i + 8] == b"END     " for i in range(0, BLOCK, 80)):
            break
        if len(blocks) * BLOCK >= MAX_HEADER_BYTES:
            raise InvalidRequest(f"Not a FITS file: {name} has no END card in its first {MAX_HEADER_BYTES} bytes.")
    try:
        return fits.Header.fromstring(b"".join(blocks).decode("ascii", "replace")), len(blocks) * BLOCK
    except Exception as exc:
        raise InvalidRequest(f"Cannot read FITS header of {name}: {exc}") from None


def data_bytes(header: fits.Header) -> int:
    """Unpadded data size of an HDU: ``|BITPIX|/8 · GCOUNT · (PCOUNT + ΠNAXISn)`` (0 without axes)."""
    try:
        naxis = int(header.get("NAXIS", 0))
        if naxis <= 0:
            return 0
        dims = [int(header.get(f"NAXIS{k}", 0)) for k in range(1, naxis + 1)]
        bitpix = abs(int(header["BITPIX"]))
        pcount, gcount = int(header.get("PCOUNT", 0) or 0), int(header.get("GCOUNT", 1) or 1)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"Malformed FITS header keyword: {exc}") from None
    if min(dims) < 0 or pcount < 0 or gcount < 0:
        raise InvalidRequest("Malformed FITS header: negative axis length.")
    return bitpix // 8 * gcount * (pcount + math.prod(dims))


def _is_image_with_data(header: fits.Header, first: bool) -> bool:
    """The HDU the reader will use: an image (or tile-compressed image) with ≥ 2 non-empty axes."""
    xt = str(header.get("XTENSION", "")).strip().upper()
    prefix = "NAXIS"
    if first or xt == "IMAGE":
        pass
    elif xt == "BINTABLE" and header.get("ZIMAGE", False):
        prefix = "ZNAXIS"
    else:
        return False
    n = int(header.get(prefix, 0) or 0)
    dims = [int(header.get(f"{prefix}{k}", 0) or 0) for k in range(1, n + 1)]
    return len(dims) >= 2 and all(d > 0 for d in dims)


def inflated_size(path: Path) -> int:
    """Bytes of the inflated FITS prefix ending with the first image HDU with data (see :func:`scan`)."""
    return scan(path)[0]


def scan(path: Path, limit: int | None = None) -> tuple[int, bool]:
    """``(bytes, complete)`` of the inflated FITS prefix ending with the first image HDU with data.

    Reads the headers from the gzip stream and skips (streaming, not storing) the data of the
    HDUs before the image. Stops as soon as the running size passes ``limit``, returning that
    running size with ``complete = False``. Without an image HDU, the whole file's size.

    Raises
    ------
    InvalidRequest
        Corrupt gzip data, a truncated header or a malformed size keyword.
    """
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            first = True
            while True:
                read = _read_header(stream, path.name)
                if read is None:
                    return total, True
                header, header_bytes = read
                size = data_bytes(header)
                total += header_bytes + math.ceil(size / BLOCK) * BLOCK
                if _is_image_with_data(header, first):
                    return total, True
                if limit is not None and total > limit:
                    return total, False
                first = False
                stream.seek(stream.tell() + math.ceil(size / BLOCK) * BLOCK)  # inflates and discards
    except (OSError, EOFError, zlib.error) as exc:
        raise InvalidRequest(f"Corrupt gzip file {path.name}: {exc}") from None


class GzipCache:
    """LRU cache (by bytes) of inflated ``.fits.gz`` files in ``directory``.

    Parameters
    ----------
    directory
        Cache directory (``<output>/.gzip_cache``), created on first use.
    max_bytes
        Total size of the cached files (``VISIVO_GZIP_CACHE_MEGABYTES``).
    max_inflated_bytes
        Largest inflated size accepted for one file (``VISIVO_MAX_INFLATED_MEGABYTES``).
    """

    def __init__(self, directory: Path, max_bytes: int, max_inflated_bytes: int) -> None:
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.max_inflated_bytes = int(max_inflated_bytes)
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._pins: dict[str, int] = {}

    def sweep_temporaries(self) -> int:
        """Remove temporaries left by a crash (``.*.tmp``); returns how many."""
        removed = 0
        if self.directory.is_dir():
            for tmp in self.directory.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
        return removed

    def key(self, path: Path) -> str:
        st = path.stat()
        return hashlib.sha256(f"{path.resolve()}\0{st.st_mtime_ns}\0{st.st_size}".encode()).hexdigest()[:40]

    @contextlib.contextmanager
    def lease(self, path: Path) -> Iterator[Path]:
        """The inflated copy of ``path``, kept from eviction while the ``with`` block runs (open it there).

        Raises
        ------
        InvalidRequest
            The inflated size passes the limit or the cache, or the gzip stream is corrupt or truncated.
        """
        key = self.key(path)
        with self._lock:
            self._pins[key] = self._pins.get(key, 0) + 1
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        try:
            with key_lock:
                target = self.directory / f"{key}.fits"
                if target.is_file():
                    with contextlib.suppress(OSError):
                        os.utime(target)
                else:
                    self._inflate(path, target)
            yield target
        finally:
            with self._lock:
                self._pins[key] -= 1
                if not self._pins[key]:
                    del self._pins[key]
                    self._key_locks.pop(key, None)

    def _inflate(self, path: Path, target: Path) -> None:
        cap = min(self.max_inflated_bytes, self.max_bytes)
        need, complete = scan(path, limit=cap)
        more = "" if complete else " or more"
        if need > self.max_inflated_bytes:
            raise InvalidRequest(
                f"{path.name} inflates to {_mib(need)}{more}, over the limit of "
                f"{_mib(self.max_inflated_bytes)} for compressed FITS (VISIVO_MAX_INFLATED_MEGABYTES); "
                "decompress it on disk and open the .fits file.")
        if need > self.max_bytes:
            raise InvalidRequest(
                f"{path.name} inflates to {_mib(need)}{more}, more than the whole gzip cache "
                f"of {_mib(self.max_bytes)} (VISIVO_GZIP_CACHE_MEGABYTES); decompress it on disk and open the "
                ".fits file.")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._make_room(need)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with gzip.open(path, "rb") as src, tmp.open("wb") as dst:
                left = need
                while left:
                    chunk = src.read(min(_COPY, left))
                    if not chunk:
                        raise InvalidRequest(
                            f"FITS file is truncated: {path.name} inflates to {need - left} bytes, "
                            f"its headers promise {need}.")
                    dst.write(chunk)
                    left -= len(chunk)
            os.replace(tmp, target)
        except (OSError, EOFError, zlib.error) as exc:
            raise InvalidRequest(f"Corrupt gzip file {path.name}: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _make_room(self, need: int) -> None:
        """Delete least recently used entries (not pinned) until ``need`` more bytes fit."""
        with self._lock:
            pinned = set(self._pins)
        entries = []
        for file in self.directory.glob("*.fits"):
            with contextlib.suppress(OSError):
                st = file.stat()
                entries.append((st.st_mtime_ns, st.st_size, file))
        used = sum(size for _, size, _ in entries)
        for _, size, file in sorted(entries, key=lambda e: e[0]):
            if used + need <= self.max_bytes:
                break
            if file.stem in pinned:
                continue
            with contextlib.suppress(OSError):
                file.unlink()
                used -= size

    def cached_bytes(self) -> int:
        """Bytes of the inflated files now in the cache."""
        return sum(f.stat().st_size for f in self.directory.glob("*.fits")) if self.directory.is_dir() else 0


_current: GzipCache | None = None


def configure(directory: Path, max_bytes: int, max_inflated_bytes: int) -> GzipCache:
    """Install the process-wide cache (called at start-up) and sweep its stale temporaries."""
    global _current
    cache = GzipCache(directory, max_bytes, max_inflated_bytes)
    cache.sweep_temporaries()
    _current = cache
    return cache


def current() -> GzipCache:
    """The configured cache; without a server (library use, tests), one in the temporary directory
    (``$TMPDIR/visivo-gzip-<uid>``) with the size settings from the environment."""
    if _current is None:
        import tempfile  # noqa: PLC0415

        from app.settings import Settings  # noqa: PLC0415

        s = Settings()
        uid = os.getuid() if hasattr(os, "getuid") else 0
        directory = Path(tempfile.gettempdir()) / f"visivo-gzip-{uid}"
        return configure(directory, s.gzip_cache_megabytes << 20, s.max_inflated_megabytes << 20)
    return _current

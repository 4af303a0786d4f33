"""Tile bytes of a survey: read from a local directory, or fetched once from a remote one and cached on disk.

- :class:`DiskCache` is a least-recently-used store of files bounded in total bytes; writes are atomic
  (temporary file + rename) so a concurrent reader never sees half a tile.
- :class:`SurveyTiles` answers ``relpath → bytes | None`` (``None`` = the survey has no such file);
  remote 404s are remembered for a while so a sparse survey is not asked twice.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import httpx

from app.errors import ApiError, InvalidRequest
from app.io.paths import confine
from app.io.remote import RemoteError, fetch_bytes

_MAGIC = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "webp": (b"RIFF",),
    "fits": (b"SIMPLE  =",),
}
MISSING_TTL_SECONDS = 600.0
MISSING_CAPACITY = 50_000


class UpstreamError(ApiError):
    """A remote survey failed or sent something that is not a tile (HTTP 502)."""

    status_code = 502


def looks_like(data: bytes, ext: str) -> bool:
    """Whether ``data`` starts with the magic bytes of a file of extension ``ext``."""
    prefixes = _MAGIC.get(ext)
    return prefixes is None or any(data.startswith(p) for p in prefixes)


class DiskCache:
    """Files under ``root`` keyed by relative path, evicted least-recently-used beyond ``max_bytes``.

    Parameters
    ----------
    root
        Cache directory (created on first write). Files already there are adopted, oldest first.
    max_bytes
        Bound on the total size of the cached files; an entry larger than it is not cached.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max(0, int(max_bytes))
        self._index: OrderedDict[str, int] | None = None
        self._total = 0
        self._lock = threading.Lock()

    def _ensure_index(self) -> OrderedDict[str, int]:
        if self._index is None:
            found = []
            if self.root.is_dir():
                for path in self.root.rglob("*"):
                    if path.is_file() and not path.name.startswith("."):
                        stat = path.stat()
                        found.append((stat.st_mtime, path.relative_to(self.root).as_posix(), stat.st_size))
            found.sort()
            self._index = OrderedDict((key, size) for _, key, size in found)
            self._total = sum(self._index.values())
            self._evict()
        return self._index

    def _evict(self) -> None:
        assert self._index is not None
        while self._total > self.max_bytes and self._index:
            key, size = self._index.popitem(last=False)
            self._total -= size
            (self.root / key).unlink(missing_ok=True)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            self._ensure_index()
            return self._total

    def get(self, key: str) -> bytes | None:
        """The cached bytes, refreshing the entry's recency; ``None`` when absent."""
        with self._lock:
            index = self._ensure_index()
            if key not in index:
                return None
            index.move_to_end(key)
        try:
            return (self.root / key).read_bytes()
        except OSError:
            with self._lock:
                self._total -= index.pop(key, 0)
            return None

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (atomically) and evict the oldest entries beyond the bound."""
        if len(data) > self.max_bytes:
            return
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        with self._lock:
            index = self._ensure_index()
            self._total += len(data) - index.pop(key, 0)
            index[key] = len(data)
            self._evict()


class _MissingSet:
    """Keys known to be absent upstream, forgotten after a TTL; bounded."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            when = self._seen.get(key)
            if when is None:
                return False
            if time.monotonic() - when > MISSING_TTL_SECONDS:
                del self._seen[key]
                return False
            return True

    def add(self, key: str) -> None:
        with self._lock:
            self._seen[key] = time.monotonic()
            self._seen.move_to_end(key)
            while len(self._seen) > MISSING_CAPACITY:
                self._seen.popitem(last=False)


class SurveyTiles:
    """The files of one survey (tiles, Allsky images, ``properties``) by relative path.

    Parameters
    ----------
    survey_id
        Cache namespace.
    cache
        Shared on-disk cache (remote files, and Allsky images built here for any survey).
    local_root
        Directory of a local survey (inside ``roots``), or ``None`` for a remote one.
    base_url
        Root URL of a remote survey.
    roots
        Data roots every local file must stay inside (symbolic links are checked).
    client, max_bytes, timeout
        HTTP client, per-file size cap and per-file total timeout (seconds) for remote fetches.
    """

    def __init__(
        self,
        survey_id: str,
        cache: DiskCache,
        *,
        local_root: Path | None = None,
        base_url: str | None = None,
        roots: Sequence[Path] = (),
        client: httpx.Client | None = None,
        max_bytes: int = 8 << 20,
        timeout: float = 15.0,
    ) -> None:
        if (local_root is None) == (base_url is None):
            raise ValueError("exactly one of local_root and base_url")
        self.survey_id = survey_id
        self.cache = cache
        self.local_root = local_root
        self.base_url = base_url.rstrip("/") if base_url else None
        self.roots = tuple(roots)
        self.client = client
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._missing = _MissingSet()

    @property
    def is_remote(self) -> bool:
        return self.base_url is not None

    def _key(self, relpath: str) -> str:
        return f"{self.survey_id}/{relpath}"

    def _read_local(self, relpath: str) -> bytes | None:
        assert self.local_root is not None
        try:
            path = confine(str(self.local_root / relpath), self.roots)
        except InvalidRequest:
            return None
        if path.stat().st_size > self.max_bytes:
            raise InvalidRequest(f"{relpath} is larger than the {self.max_bytes}-byte tile limit.")
        return path.read_bytes()

    def _fetch_remote(self, relpath: str) -> bytes | None:
        assert self.base_url is not None and self.client is not None
        try:
            response = fetch_bytes(
                self.client, f"{self.base_url}/{relpath}", max_bytes=self.max_bytes, total_timeout=self.timeout
            )
        except RemoteError as exc:
            if exc.status in (403, 404, 410):
                return None
            raise UpstreamError(f"HiPS survey fetch failed: {exc.message}") from None
        return response.content

    def get(self, relpath: str, *, check_ext: str | None = None) -> bytes | None:
        """The file's bytes, ``None`` when the survey has no such file.

        Remote files are fetched once, checked against ``check_ext``'s magic bytes, then cached.
        """
        key = self._key(relpath)
        if not self.is_remote:
            return self._read_local(relpath)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if key in self._missing:
            return None
        data = self._fetch_remote(relpath)
        if data is None:
            self._missing.add(key)
            return None
        if check_ext and not looks_like(data, check_ext):
            raise UpstreamError(f"HiPS survey sent something that is not a .{check_ext} file for {relpath}.")
        self.cache.put(key, data)
        return data

    def get_derived(self, relpath: str) -> bytes | None:
        """A file this server built for the survey (e.g. an Allsky), if cached."""
        return self.cache.get(self._key(f"_built/{relpath}"))

    def put_derived(self, relpath: str, data: bytes) -> None:
        self.cache.put(self._key(f"_built/{relpath}"), data)

"""The JS9 analysis result cache: SHA-256 keys, 100 entries, first in first out.

Key (the reference's, plus the file's identity so an edited file is never served stale)::

    SHA256(task ‖ image_path ‖ region_json ‖ parameters_json ‖ mtime_ns ‖ size)

with ``‖`` a NUL separator, ``image_path`` the resolved path (two spellings of one file share
entries) and both JSON texts canonical (sorted keys, no spaces). Only successful results are
cached; entries live until eviction or server restart. The cache belongs to one application
(``app.state``), and is touched only from the event loop, so it needs no lock.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from typing import Any

#: Maximum number of cached results (FIFO eviction).
CACHE_SIZE = 100


def canonical_json(value: Any) -> str:
    """Deterministic JSON text of a request fragment (``""`` for ``None``)."""
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True, default=str)


def cache_key(task: str, image_path: str, region: Any, parameters: Any, stat: os.stat_result) -> str:
    """SHA-256 hex digest identifying one analysis of one version of a file."""
    parts = [task, image_path, canonical_json(region), canonical_json(parameters or {}),
             str(stat.st_mtime_ns), str(stat.st_size)]
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


class ResultCache:
    """FIFO map ``key → result`` holding at most ``capacity`` entries."""

    def __init__(self, capacity: int = CACHE_SIZE) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached result, or ``None`` (a lookup does not refresh the entry: FIFO, not LRU)."""
        value = self._entries.get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Store a result; the oldest entry goes when the cache is full."""
        if self.capacity <= 0:
            return
        if key in self._entries:
            self._entries[key] = value
            return
        while len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
        self._entries[key] = value

    def clear(self) -> None:
        self._entries.clear()

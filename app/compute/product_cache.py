"""LRU cache of computed products, keyed by dataset identity and canonical parameters."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from typing import Any


def product_key(operation: str, dataset_keys: list[str], params: dict[str, Any]) -> str:
    """A stable key: operation + dataset identities (id and file mtime) + sorted JSON parameters."""
    blob = json.dumps({"op": operation, "ds": dataset_keys, "p": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class ProductCache:
    """Thread-safe LRU with a fixed entry capacity (0 disables caching)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is cached (no hit/miss counting, no LRU update)."""
        with self._lock:
            return key in self._items

    def put(self, key: str, value: Any) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

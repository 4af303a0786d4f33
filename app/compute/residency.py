"""Device-resident cube cache: an LRU of cubes kept on each GPU between requests.

Budget per device = ``VISIVO_GPU_MEMORY_FRACTION`` × the device's total memory. A cube
larger than the budget is never made resident; such cubes stream through in y-slabs
(:mod:`app.compute.slab_runner`). Keys carry the dataset id and file modification time.
The uploader is injected so the bookkeeping is testable with NumPy.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ResidentCubes:
    """LRU of device arrays, bounded in bytes per device."""

    def __init__(self, budget_bytes: Callable[[int], int]) -> None:
        self._budget = budget_bytes
        self._items: dict[int, OrderedDict[str, tuple[Any, int]]] = {}
        self._lock = threading.Lock()

    def fits(self, device: int, nbytes: int) -> bool:
        return nbytes <= self._budget(device)

    def get(self, device: int, key: str) -> Any | None:
        with self._lock:
            table = self._items.get(device)
            if table is None or key not in table:
                return None
            table.move_to_end(key)
            return table[key][0]

    def put(self, device: int, key: str, array: Any, nbytes: int) -> bool:
        """Keep ``array``; evict least-recently used cubes until it fits. False when it never fits."""
        budget = self._budget(device)
        if nbytes > budget:
            return False
        with self._lock:
            table = self._items.setdefault(device, OrderedDict())
            table.pop(key, None)
            while table and sum(n for _, n in table.values()) + nbytes > budget:
                table.popitem(last=False)
            table[key] = (array, nbytes)
        return True

    def get_or_upload(self, device: int, key: str, nbytes: int, upload: Callable[[], Any]) -> Any | None:
        """The resident array, uploading it first if it fits the budget; ``None`` if it must stream."""
        found = self.get(device, key)
        if found is not None or not self.fits(device, nbytes):
            return found
        array = upload()
        self.put(device, key, array, nbytes)
        return array

    def evict_prefix(self, prefix: str) -> None:
        """Drop every entry whose key starts with ``prefix`` (e.g. a closed dataset)."""
        with self._lock:
            for table in self._items.values():
                for key in [k for k in table if k.startswith(prefix)]:
                    del table[key]

    def report(self) -> dict[int, dict[str, int]]:
        with self._lock:
            return {d: {"cubes": len(t), "bytes": sum(n for _, n in t.values())} for d, t in self._items.items()}

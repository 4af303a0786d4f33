"""Per-request limits: the memory budget and the response-size limit, checked before computing.

Every service that allocates per request estimates its peak working memory from the
geometry of the request *before* reading or computing anything and calls
:func:`check_budget`; answers whose size is known in advance (cube previews, sub-volumes,
slices, float32 images) call :func:`check_response`. Both raise
:class:`~app.errors.InvalidRequest` (HTTP 200, ``valid: false``) with a message naming the
size, the limit and the setting, so a request past a limit costs nothing.

The limits are process-wide: :func:`configure` is called once at start-up with the server's
settings (``VISIVO_MEMORY_BUDGET_MB``, default a quarter of physical RAM;
``VISIVO_MAX_RESPONSE_MB``), which also installs the gzip cache (:mod:`app.io.gzip_cache`);
until then they are read from the environment.

Sizes are estimates, documented next to each call: float32 data is 4 bytes a value and a
base64 payload ``4·ceil(n/3)`` bytes for ``n`` raw bytes (the estimate ignores ``qt-zlib``
compression, so a compressed answer is limited by its uncompressed size).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidRequest
from app.io import gzip_cache


@dataclass(frozen=True)
class Limits:
    """The per-request limits in bytes."""

    memory_budget_bytes: int
    max_response_bytes: int

    @property
    def preview_target_bytes(self) -> int:
        """Payload size a cube preview without ``downsample`` stays under: a quarter of the response limit."""
        return max(1, self.max_response_bytes // 4)


_lock = threading.Lock()
_limits: Limits | None = None


def configure(settings) -> Limits:  # noqa: ANN001  (app.settings.Settings; no import cycle)
    """Set the process-wide limits from the server settings (called at start-up)."""
    global _limits
    limits = Limits(settings.effective_memory_budget_bytes, int(settings.max_response_mb) << 20)
    with _lock:
        _limits = limits
    gzip_cache.configure(Path(settings.output_dir) / ".gzip_cache", int(settings.gzip_cache_megabytes) << 20,
                         int(settings.max_inflated_megabytes) << 20)
    return limits


def current() -> Limits:
    """The configured limits (from the environment when :func:`configure` was never called)."""
    if _limits is None:
        from app.settings import Settings  # noqa: PLC0415

        return configure(Settings())
    return _limits


def mib(nbytes: float) -> str:
    """``nbytes`` as MiB with one decimal (``"12.5 MiB"``)."""
    return f"{nbytes / 2**20:.1f} MiB"


def base64_bytes(raw_bytes: int) -> int:
    """Length of the base64 text of ``raw_bytes`` bytes: ``4·ceil(n/3)``."""
    return 4 * math.ceil(max(0, raw_bytes) / 3)


def check_budget(nbytes: float, what: str, budget: int | None = None) -> None:
    """Refuse a request whose estimated working memory ``nbytes`` passes the per-request budget.

    Parameters
    ----------
    nbytes
        Estimated peak working memory of the request (bytes).
    what
        What needs it, for the message (e.g. ``"Isosurface of 512×512×256 voxels"``).
    budget
        The budget in bytes; default the configured ``VISIVO_MEMORY_BUDGET_MB``.

    Raises
    ------
    InvalidRequest
        ``nbytes > budget``, naming both sizes.
    """
    limit = current().memory_budget_bytes if budget is None else int(budget)
    if nbytes > limit:
        raise InvalidRequest(
            f"{what} needs about {mib(nbytes)} of memory, over the per-request memory budget of "
            f"{mib(limit)} (VISIVO_MEMORY_BUDGET_MB); ask for a smaller region, a larger step or downsample."
        )


def check_response(nbytes: float, what: str, limit: int | None = None) -> None:
    """Refuse an answer whose payload ``nbytes`` would pass ``VISIVO_MAX_RESPONSE_MB``.

    Raises
    ------
    InvalidRequest
        ``nbytes > limit``, naming both sizes.
    """
    cap = current().max_response_bytes if limit is None else int(limit)
    if nbytes > cap:
        raise InvalidRequest(
            f"{what}: the answer would be about {mib(nbytes)}, over the response limit of {mib(cap)} "
            f"(VISIVO_MAX_RESPONSE_MB); ask for a smaller region or a larger downsample."
        )


def check_rows(shape: tuple[int, int, int], bytes_per_voxel: float, what: str) -> None:
    """Refuse slab-wise work whose smallest slab (one row, spectral axis whole) passes the budget.

    ``y_slabs`` never cuts below one row of ``nz·nx`` voxels, so that row is the least memory
    such a job can use.
    """
    nz, _, nx = shape
    check_budget(nz * nx * bytes_per_voxel, what)

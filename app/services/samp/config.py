"""Limits and intervals of the SAMP service, from ``samp_*`` settings (defaults when a field is absent)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SampConfig:
    """Limits and intervals of the SAMP service.

    Attributes
    ----------
    output_dir
        Where uploads, imports and converted catalogues are written.
    max_file_bytes
        Cap on an upload or an imported URL.
    import_timeout
        Seconds for one URL import (whole transfer).
    hub_timeout
        Seconds for one call to the hub.
    watch_interval
        Seconds between watchdog checks of the hub once connected (0: no watchdog).
    require_token
        Also require ``X-Visivo-Token`` on the SAMP routes (except file downloads by token).
    lockfile_dir
        Directory whose ``.samp`` is the hub lockfile (``None``: ``SAMP_HUB``, else ``~/.samp``).
    """

    output_dir: Path
    max_file_bytes: int = 512 << 20
    import_timeout: float = 60.0
    hub_timeout: float = 5.0
    watch_interval: float = 10.0
    require_token: bool = False
    lockfile_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> SampConfig:
        """Read ``samp_*`` settings when present, defaults otherwise."""
        return cls(
            output_dir=Path(settings.output_dir),
            max_file_bytes=int(getattr(settings, "samp_max_file_megabytes", 512)) << 20,
            import_timeout=float(getattr(settings, "samp_import_timeout_seconds", 60.0)),
            hub_timeout=float(getattr(settings, "samp_hub_timeout_seconds", 5.0)),
            watch_interval=float(getattr(settings, "samp_watch_seconds", 10.0)),
            require_token=bool(getattr(settings, "samp_require_token", False)),
            lockfile_dir=getattr(settings, "samp_lockfile_dir", None),
        )

"""Server settings, read once from ``VISIVO_*`` environment variables.

Every field is documented in the README's settings table; keep the two in step.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The built-in demo data root (real VLA data + generated catalogue/VBT), used when
#: ``VISIVO_DATA_ROOTS`` is not set.
DEMO_DATA_ROOT = Path(__file__).resolve().parent / "demo_data"


class Settings(BaseSettings):
    """All tunables of the server (environment prefix ``VISIVO_``)."""

    model_config = SettingsConfigDict(env_prefix="VISIVO_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_roots: str = Field(
        "",
        description="Directories the file routes may read, separated by ':' or ','. Empty: the demo data.",
    )
    output_dir: Path = Field(Path("~/.visivo/output"), description="Where products (FITS) are written.")
    token: str | None = Field(None, description="Fixed API token; random per start when unset.")
    token_file: Path = Path("~/.visivo_token")
    workers: int = Field(4, ge=1, le=256)
    heavy_slots: int | None = Field(None, ge=1, description="Concurrent heavy jobs on CPU; max(1, workers-1).")
    heavy_queue_limit: int = Field(32, ge=0, description="Heavy jobs allowed to wait for a slot before 'busy'.")
    backend: Literal["auto", "gpu", "cpu"] = "auto"
    gpu_slots_per_device: int = Field(2, ge=1)
    gpu_memory_fraction: float = Field(
        0.5, gt=0.0, le=0.95, description="Fraction of free device memory the resident-cube cache may use."
    )
    task_ttl_seconds: int = Field(3600, ge=0, description="Task entries expire this long after last touch; 0 = never.")
    task_status_style: Literal["reference", "legacy"] = Field(
        "reference", description="'reference': done/error; 'legacy': completed/failed (older desktop clients)."
    )
    product_cache_capacity: int = Field(64, ge=0)
    linewidth_chunks: int | None = Field(None, ge=1, description="Row chunks of a line-width job; default workers.")
    linewidth_snr: float = Field(3.0, ge=0.0)
    chunk_megabytes: int = Field(64, ge=1, description="Per-chunk memory budget of heavy CPU work (MiB).")
    log_level: str = "info"
    js9_engine: Literal["native", "casa"] = Field(
        "native", description="Default engine of /api/visualization/js9/analysis (parameters.engine overrides)."
    )
    hips_cache_megabytes: int = Field(512, ge=0, description="On-disk cache of remote HiPS files and Allskies (MiB).")
    hips_timeout_seconds: float = Field(15.0, gt=0, description="Timeout of one remote HiPS file.")
    hips_tile_max_megabytes: int = Field(8, ge=1, description="Largest file accepted from a HiPS survey (MiB).")
    hips_max_tiles: int = Field(10_000, ge=1, description="Largest tile cover /v1/hips/query_tiles returns.")
    samp_max_file_megabytes: int = Field(512, ge=1, description="Cap on a SAMP upload or URL import (MiB).")
    samp_import_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one SAMP URL import.")
    samp_hub_timeout_seconds: float = Field(5.0, gt=0, description="Timeout of one call to the SAMP hub.")
    samp_watch_seconds: float = Field(10.0, ge=0, description="Seconds between SAMP hub checks; 0 = off.")
    samp_require_token: bool = Field(False, description="Also require the token on SAMP routes (downloads excepted).")
    memory_budget_mb: int | None = Field(
        None, ge=16, description="Largest working memory one request may use (MiB); default a quarter of RAM."
    )
    max_response_mb: int = Field(64, ge=1, description="Largest JSON answer (MiB) of previews, sub-volumes, images.")
    max_request_mb: int = Field(16, ge=1, description="Largest request body (MiB), checked before parsing.")
    session_ttl_seconds: int = Field(
        86_400, ge=0, description="Sessions idle this long expire with their datasets; 0 = never."
    )
    max_datasets_per_session: int = Field(64, ge=1, description="Open datasets one session may hold.")
    gzip_cache_megabytes: int = Field(
        4096, ge=0, description="On-disk cache of inflated .fits.gz files (MiB, LRU, under the output dir)."
    )
    max_inflated_megabytes: int = Field(
        65_536, ge=1, description="Largest inflated size of a compressed FITS file accepted (MiB)."
    )
    cpu_threads: int | None = Field(None, ge=1, description="Threads of the compiled CPU kernels; default cores.")
    samp_lockfile_dir: Path | None = Field(
        None, description="Directory holding the SAMP hub lockfile '.samp' (default: SAMP_HUB or the home dir)."
    )
    sesame_url: str = Field(
        "https://cds.unistra.fr/cgi-bin/nph-sesame,https://vizier.cfa.harvard.edu/viz-bin/nph-sesame",
        description="Sesame name-resolver base URLs, comma-separated mirrors; empty disables network lookups.",
    )
    dask_scheduler: str = Field(
        "", description="Dask lane: 'tcp://host:8786' (running scheduler), 'local' or 'local:N' (LocalCluster)."
    )
    dask_fallback: Literal["", "local"] = Field(
        "", description="'local': an unreachable Dask scheduler is logged and work runs locally."
    )
    dask_connect_timeout_seconds: float = Field(10.0, gt=0, description="Wait for the Dask scheduler at start-up.")
    dask_min_megabytes: float = Field(
        256.0, ge=0, description="Dask lane: PV and isosurface use the cluster only when they read at least this "
        "much cube (MiB); smaller ones run locally.")

    @field_validator("output_dir", "token_file", "samp_lockfile_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expanduser(str(value)))

    @cached_property
    def data_root_paths(self) -> tuple[Path, ...]:
        """The configured data roots, resolved; the demo root when none is configured."""
        raw = [p for chunk in self.data_roots.replace(",", os.pathsep).split(os.pathsep) if (p := chunk.strip())]
        roots = [Path(os.path.expanduser(p)).resolve() for p in raw] or [DEMO_DATA_ROOT]
        return tuple(roots)

    @property
    def effective_heavy_slots(self) -> int:
        """Heavy slots: the explicit setting, else ``max(1, workers - 1)``."""
        return self.heavy_slots if self.heavy_slots is not None else max(1, self.workers - 1)

    @property
    def effective_linewidth_chunks(self) -> int:
        """Row chunks of a line-width computation: the explicit setting, else ``workers``."""
        return self.linewidth_chunks if self.linewidth_chunks is not None else self.workers

    @property
    def effective_memory_budget_bytes(self) -> int:
        """Per-request memory budget in bytes: the explicit setting, else a quarter of physical RAM."""
        if self.memory_budget_mb is not None:
            return self.memory_budget_mb << 20
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 8 << 30
        return max(256 << 20, total // 4)

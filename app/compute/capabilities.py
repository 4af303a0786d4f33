"""The capability row: what the server knows about how one operation runs.

Each operation module (``app/operations/defs/*.py``) declares its own row; the registry
(:mod:`app.operations.registry`) collects them into the one capability table that the
dispatcher reads, ``/v1/health`` reports and ``tests/test_registry.py`` checks. A row is
the only place that names an operation's kernel modules, whether it runs on the GPU (or
the written reason it does not), its tier, its chunking and (through the kernel module)
its parity tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from app.compute.contract import PARITY_TOLERANCE, Tolerance

Tier = Literal["interactive", "heavy"]


@dataclass(frozen=True)
class Capability:
    """How one operation runs.

    Attributes
    ----------
    kernels
        Kernel modules the operation's job calls (same names in ``cpu_fallback`` and
        ``gpu_kernels``); empty for operations that only read files or metadata.
    tier
        ``interactive`` (never waits behind heavy work) or ``heavy`` (slot-gated, a task).
    gpu_kernel
        The job runs its kernels on the GPU when the backend is the GPU one.
    no_gpu_reason
        Why an operation with ``gpu_kernel=False`` runs on the CPU (required then).
    chunking
        ``y-slab`` (spectral axis whole, rows tiled), ``channel`` (planes tiled), ``cube``
        (reduction with partial/combine/finalize), ``none``.
    bytes_per_voxel
        Working memory per input voxel of one chunk beyond the input itself (estimate).
    note
        One line for ``/v1/health``.
    distributable
        With ``VISIVO_DASK_SCHEDULER`` set, the job's tiles run as Dask tasks on the cluster
        (:mod:`app.compute.dask_lane`).
    dask_size_gated
        Distributable only where the cube is large (``VISIVO_DASK_MIN_MEGABYTES``, PV and isosurface):
        the job keeps the server's own device (a GPU server runs it there), and the service sends its
        tiles to the cluster only when the work is large and the job runs on the CPU.
    """

    kernels: tuple[str, ...]
    tier: Tier
    gpu_kernel: bool
    no_gpu_reason: str = ""
    chunking: str = "none"
    bytes_per_voxel: float = 4.0
    note: str = ""
    distributable: bool = False
    dask_size_gated: bool = False

    def __post_init__(self) -> None:
        if not self.gpu_kernel and not self.no_gpu_reason:
            raise ValueError("a capability without a GPU kernel must say why (no_gpu_reason)")
        if self.gpu_kernel and not self.kernels:
            raise ValueError("a GPU capability must name its kernel modules")

    @property
    def module(self) -> str | None:
        """The main kernel module (the first one), or ``None``."""
        return self.kernels[0] if self.kernels else None

    @property
    def tolerance(self) -> Tolerance | None:
        """Parity tolerance of the main kernel module (GPU vs CPU reference)."""
        return PARITY_TOLERANCE.get(self.module) if self.module else None

    def report(self) -> dict[str, Any]:
        """JSON-ready row for ``/v1/health``."""
        tol = self.tolerance
        return {
            "module": self.module, "kernels": list(self.kernels), "gpu_kernel": self.gpu_kernel,
            "no_gpu_reason": self.no_gpu_reason, "tier": self.tier, "chunking": self.chunking,
            "bytes_per_voxel": self.bytes_per_voxel, "note": self.note,
            "distributable": self.distributable,
            "parity_rtol": tol.rtol if tol else None, "parity_atol": tol.atol if tol else None,
        }

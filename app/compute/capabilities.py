"""Capability table: per operation, which kernel module runs it, whether a GPU kernel
exists, how it is chunked, its tier and its memory estimate.

This is data, not code paths: the dispatcher reads it, ``/v1/health`` reports it,
and ``tests/test_kernel_contract.py`` checks that every ``gpu_kernel=True`` entry
has a GPU module with the same signatures as its CPU twin. An operation without
a GPU kernel runs on the CPU on either backend and says so (``computed_on``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from app.compute.contract import PARITY_TOLERANCE, Tolerance


@dataclass(frozen=True)
class Capability:
    """What the server knows about one operation.

    Attributes
    ----------
    module
        Kernel module name (same in ``cpu_fallback`` and ``gpu_kernels``).
    gpu_kernel
        A CuPy kernel exists and is used on the GPU backend.
    tier
        ``interactive`` (never waits behind heavy work) or ``heavy`` (slot-gated).
    chunking
        ``y-slab`` (spectral axis whole, spatial rows tiled), ``channel`` (planes tiled),
        ``cube`` (per whole cube, reduction with partial/combine), or ``none``.
    bytes_per_voxel
        Working memory per input voxel of one chunk beyond the input itself (estimate).
    """

    module: str
    gpu_kernel: bool
    tier: str
    chunking: str
    bytes_per_voxel: float
    note: str = ""

    @property
    def tolerance(self) -> Tolerance | None:
        return PARITY_TOLERANCE.get(self.module)

    def report(self) -> dict[str, Any]:
        out = asdict(self)
        tol = self.tolerance
        out["parity_rtol"] = tol.rtol if tol else None
        out["parity_atol"] = tol.atol if tol else None
        return out


CAPABILITIES: dict[str, Capability] = {
    "preview": Capability("cube_views", True, "interactive", "none", 4.0, "strided read of the memmap"),
    "slice": Capability("cube_views", True, "interactive", "none", 4.0),
    "subvolume": Capability("cube_views", True, "interactive", "none", 4.0),
    "noise": Capability("noise", True, "interactive", "channel", 12.0),
    "moment": Capability("moments", True, "heavy", "y-slab", 16.0, "fused single pass, float64 accumulation"),
    "moment_casa": Capability("casa_moments", True, "heavy", "y-slab", 24.0, "CASA immoments numbering"),
    "pv": Capability("pv", True, "heavy", "none", 4.0, "box sampling across the path (CARTA-style)"),
    "linewidth": Capability("linewidth", True, "heavy", "y-slab", 48.0, "batched Levenberg-Marquardt Gaussian fit"),
    "baseline": Capability("baseline", True, "heavy", "y-slab", 24.0, "batched least squares, Legendre basis"),
    "stacking": Capability("stacking", True, "heavy", "cube", 8.0, "partial/combine/finalize mean spectra"),
    "isosurface": Capability("isosurface", True, "heavy", "none", 12.0,
                             "CPU: scikit-image marching cubes (Lorensen); GPU: own CuPy kernel"),
    "js9_imstat": Capability("stats", True, "interactive", "cube", 8.0,
                             "CASA imstat keys; sorted-run partials, exact order statistics"),
    "js9_specflux": Capability("region_flux", True, "interactive", "channel", 8.0, "per-channel region sums"),
    "js9_imfit": Capability("fit2d", True, "heavy", "none", 32.0, "batched Levenberg-Marquardt, 2-D Gaussians"),
    "js9_imview": Capability("contours", True, "interactive", "none", 40.0,
                             "Gaussian smoothing on GPU; marching squares on CPU (declared)"),
}


def capability_report() -> dict[str, dict[str, Any]]:
    """The table as JSON-ready dicts (for ``/v1/health``)."""
    return {name: cap.report() for name, cap in CAPABILITIES.items()}

"""JS9 ``imstat``: CASA imstat statistics over a region (native engine)."""

from __future__ import annotations

from app.compute.capabilities import Capability
from app.operations.defs._js9 import Js9Task, TaskFunction
from app.services.js9 import native_engine


class Js9Imstat(Js9Task):
    """CASA `imstat` keys over the region (whole image without one), blanks excluded."""

    name = "js9_imstat"
    js9_task = "imstat"
    capability = Capability(kernels=("stats", "region_flux"), tier="interactive", gpu_kernel=True, chunking="cube",
                            bytes_per_voxel=8.0, note="CASA imstat keys; sorted-run partials, exact order statistics")

    @staticmethod
    def run_task(task: str) -> TaskFunction:
        return native_engine.imstat

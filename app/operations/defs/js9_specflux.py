"""JS9 ``specflux``: flux in a region per channel (native engine)."""

from __future__ import annotations

from app.compute.capabilities import Capability
from app.operations.defs._js9 import Js9Task, TaskFunction
from app.services.js9 import native_engine


class Js9Specflux(Js9Task):
    """Per-channel region sums, means and fluxes (CASA `specflux`)."""

    name = "js9_specflux"
    js9_task = "specflux"
    capability = Capability(kernels=("region_flux",), tier="interactive", gpu_kernel=True, chunking="channel",
                            bytes_per_voxel=8.0, note="per-channel region sums")

    @staticmethod
    def run_task(task: str) -> TaskFunction:
        return native_engine.specflux

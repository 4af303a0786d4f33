"""JS9 ``imval``: pixel values in a region or box (native engine)."""

from __future__ import annotations

from app.compute.capabilities import Capability
from app.operations.defs._js9 import Js9Task, TaskFunction
from app.services.js9 import native_engine


class Js9Imval(Js9Task):
    """Values, mask and unit of the pixels in a region (CASA `imval`)."""

    name = "js9_imval"
    js9_task = "imval"
    capability = Capability(kernels=(), tier="interactive", gpu_kernel=False,
                            no_gpu_reason="a plain read of the region's pixels: nothing to compute")

    @staticmethod
    def run_task(task: str) -> TaskFunction:
        return native_engine.imval

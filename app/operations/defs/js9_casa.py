"""The JS9 tasks on the CASA engine (the real casatasks, offline)."""

from __future__ import annotations

from app.compute.capabilities import Capability
from app.operations.defs._js9 import Js9Task, TaskFunction
from app.services.js9 import casa_engine


class Js9Casa(Js9Task):
    """Any JS9 task run by casatasks (`parameters.engine = "casa"`), serialised by CASA's lock."""

    name = "js9_casa"
    capability = Capability(kernels=("fit2d", "contours"), tier="heavy", gpu_kernel=False,
                            no_gpu_reason="casatasks run on the CPU; only imfit's start estimates (fit2d) and "
                                          "imview's contour tracing (contours) use our kernels")
    task = False  # answered by the JS9 route only

    @staticmethod
    def run_task(task: str) -> TaskFunction:
        return casa_engine.TASKS[task]

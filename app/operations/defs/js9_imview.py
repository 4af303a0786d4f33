"""JS9 ``imview``: contour levels and paths (native engine)."""

from __future__ import annotations

from app.compute.capabilities import Capability
from app.operations.defs._js9 import Js9Task, TaskFunction
from app.services.js9 import native_engine


class Js9Imview(Js9Task):
    """Contours of one plane: Gaussian smoothing on the job's device, marching squares on the CPU."""

    name = "js9_imview"
    js9_task = "imview"
    capability = Capability(kernels=("contours",), tier="interactive", gpu_kernel=True, bytes_per_voxel=40.0,
                            note="Gaussian smoothing on GPU; marching squares on CPU (declared)")

    @staticmethod
    def run_task(task: str) -> TaskFunction:
        return native_engine.imview

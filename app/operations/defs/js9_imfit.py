"""JS9 ``imfit``: 2-D Gaussian fits in a region (native engine)."""

from __future__ import annotations

from app.compute.capabilities import Capability
from app.operations.defs._js9 import Js9Task, TaskFunction
from app.services.js9 import native_imfit


class Js9Imfit(Js9Task):
    """One or more elliptical Gaussians fitted to the region (batched Levenberg–Marquardt)."""

    name = "js9_imfit"
    js9_task = "imfit"
    capability = Capability(kernels=("fit2d",), tier="heavy", gpu_kernel=True, bytes_per_voxel=32.0,
                            note="batched Levenberg-Marquardt, 2-D Gaussians")
    task = False  # answered by the JS9 route only

    @staticmethod
    def run_task(task: str) -> TaskFunction:
        return native_imfit.imfit

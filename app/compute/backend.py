"""Backend selection (CPU or GPU), done once at start-up.

``VISIVO_BACKEND``:

- ``cpu``: the NumPy/SciPy reference kernels (:mod:`cpu_fallback`).
- ``gpu``: CuPy kernels (:mod:`gpu_kernels`); start-up fails when no CUDA device
  answers or a kernel fails its self-test.
- ``auto``: probe CuPy and a CUDA device, JIT-warm and self-test every GPU
  kernel against the CPU reference on a tiny cube; on any failure fall back to
  the CPU with a logged warning.

Operations without a GPU kernel (their capability row, :mod:`app.compute.capabilities`) run on the
CPU on either backend, and the response says so (``computed_on``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.compute.capabilities import Capability

log = logging.getLogger("visivo.compute")


@dataclass
class DeviceInfo:
    """A CUDA device as reported to ``/v1/health``."""

    index: int
    name: str
    total_memory: int
    free_memory: int = 0


def _query_devices() -> list[DeviceInfo]:
    import cupy  # noqa: PLC0415  (optional dependency, probed lazily)

    devices = []
    for index in range(cupy.cuda.runtime.getDeviceCount()):
        props = cupy.cuda.runtime.getDeviceProperties(index)
        with cupy.cuda.Device(index):
            free, total = cupy.cuda.runtime.memGetInfo()
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        devices.append(DeviceInfo(index, name, int(total), int(free)))
    return devices


@dataclass
class Backend:
    """The live compute backend: which kernel tree runs each operation, and on what devices."""

    name: str  # "cpu" | "gpu"
    devices: list[DeviceInfo] = field(default_factory=list)
    reason: str = ""

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def runs_on_gpu(self, capability: Capability | None) -> bool:
        """True when the operation of ``capability`` has a GPU kernel and this backend is the GPU one."""
        return self.is_gpu and capability is not None and capability.gpu_kernel

    def device_report(self) -> list[dict[str, Any]]:
        """Name and total/free memory (bytes) of each device, queried now."""
        if not self.is_gpu:
            return []
        try:
            live = _query_devices()
        except Exception:  # the driver went away; report what we knew
            live = self.devices
        return [
            {"index": d.index, "name": d.name, "total_memory": d.total_memory, "free_memory": d.free_memory}
            for d in live
        ]


def _gpu_probe() -> list[DeviceInfo]:
    import cupy  # noqa: PLC0415

    if not cupy.cuda.is_available():
        raise RuntimeError("CuPy is installed but no CUDA device is available")
    devices = _query_devices()
    if not devices:
        raise RuntimeError("no CUDA device found")
    return devices


def select_backend(setting: str) -> Backend:
    """Choose the backend for ``VISIVO_BACKEND`` (``auto|gpu|cpu``).

    Raises
    ------
    RuntimeError
        ``setting == "gpu"`` and no working GPU (the server refuses to start).
    """
    if setting == "cpu":
        return Backend("cpu", reason="VISIVO_BACKEND=cpu")
    try:
        devices = _gpu_probe()
        from app.compute.selftest import run_gpu_selftest  # noqa: PLC0415

        run_gpu_selftest(devices)
    except Exception as exc:
        message = f"GPU backend unavailable: {type(exc).__name__}: {exc}"
        if setting == "gpu":
            raise RuntimeError(message) from exc
        log.warning("%s; falling back to the CPU (NumPy) backend", message)
        return Backend("cpu", reason=message)
    log.info("GPU backend on %s", ", ".join(f"{d.index}:{d.name}" for d in devices))
    return Backend("gpu", devices=devices, reason="CUDA devices found and kernels self-tested")


def to_host(array: Any) -> np.ndarray:
    """A NumPy array from a NumPy or CuPy array (``# sync`` for CuPy)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if get is not None else np.asarray(array)  # sync

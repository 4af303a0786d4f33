"""What runs on a Dask worker: which kernel tree a tile uses (CuPy or NumPy) and the compiled path's threads.

A tile of an operation with a GPU kernel is submitted with the worker resource ``GPU=1`` when the
cluster's workers advertise GPUs (``dask cuda worker``, or ``dask worker --resources GPU=1``). On the
worker, :func:`worker_gpu` decides once per process whether the CuPy kernels really run: the worker
must advertise a ``GPU`` resource *and* CuPy must see a CUDA device. A worker that advertises GPUs but
has no usable CUDA runs the CPU kernels and says why (the job's ``cluster.fallback``, and one warning
in the worker's log).

The services' tile functions stay NumPy in, NumPy out. They call their kernels through a
:class:`TileKernels` handle (what ``ctx.kernels()`` gives a job on the cluster): inside a GPU tile on a
GPU worker each kernel call runs the ``gpu_kernels`` twin (arguments copied to the device, results
back to the host); everywhere else (the server, CPU workers, CPU tiles) it is the ``cpu_fallback``
function itself, so CPU answers are bit-identical to the local path's.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

log = logging.getLogger("visivo.dask")

#: Threads of a compiled (numba) kernel call on a worker (``VISIVO_DASK_KERNEL_THREADS``, default 1:
#: Dask parallelises over tiles, one per worker thread).
KERNEL_THREADS_ENV = "VISIVO_DASK_KERNEL_THREADS"

_local = threading.local()  # .gpu: the tile running on this thread uses the CuPy kernels
_gpu_state: tuple[bool, str] | None = None
_gpu_lock = threading.Lock()


def advertised_gpus() -> float:
    """The ``GPU`` resource this Dask worker advertises (0 outside a worker or without one)."""
    try:
        from distributed import get_worker  # noqa: PLC0415

        worker = get_worker()
    except (ImportError, ValueError):
        return 0.0
    return float(worker.state.total_resources.get("GPU", 0))


def _probe_cuda() -> tuple[bool, str]:
    try:
        import cupy  # noqa: PLC0415

        count = int(cupy.cuda.runtime.getDeviceCount())
    except ImportError:
        return False, "CuPy is not installed"
    except Exception as exc:  # noqa: BLE001 - any CUDA runtime error means: no usable device
        return False, f"CUDA is unusable ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "no CUDA device is visible"
    return True, f"{count} CUDA device(s)"


def worker_gpu() -> tuple[bool, str]:
    """``(runs the CuPy kernels, why)`` for this worker process (probed once).

    True only when the worker advertises a ``GPU`` resource and CuPy sees a CUDA device. When the
    resource is advertised but CUDA is unusable the reason names the worker and the CUDA error,
    and a warning is logged once.
    """
    global _gpu_state
    with _gpu_lock:
        if _gpu_state is None:
            gpus = advertised_gpus()
            if gpus <= 0:
                _gpu_state = (False, "")
            else:
                usable, why = _probe_cuda()
                _gpu_state = (usable, "" if usable else
                              f"worker {_worker_label()} advertises GPU={gpus:g} but {why}: its tiles ran the "
                              "CPU kernels")
                if not usable:
                    log.warning("%s", _gpu_state[1])
        return _gpu_state


def _worker_label() -> str:
    try:
        from distributed import get_worker  # noqa: PLC0415

        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"pid {os.getpid()}"


def _to_device(value: Any) -> Any:
    import cupy  # noqa: PLC0415

    if isinstance(value, np.ndarray):
        return cupy.asarray(value)
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.ndarray) for v in value):
        return type(value)(_to_device(v) for v in value)
    return value


def to_host_tree(value: Any) -> Any:
    """``value`` with every CuPy array (also inside tuples, lists and dicts) copied to a NumPy array."""
    if isinstance(value, dict):
        return {k: to_host_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_host_tree(v) for v in value)
    if isinstance(value, (np.ndarray, np.generic, int, float, str, bytes)) or value is None:
        return value
    if hasattr(value, "shape") and callable(getattr(value, "get", None)):  # a CuPy array (or 0-d)
        return value.get()  # sync
    return value


def _on_device(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*(_to_device(a) for a in args), **{k: _to_device(v) for k, v in kwargs.items()})
        return to_host_tree(out)

    return call


class TileKernels:
    """A kernel module resolved where the call runs: the CuPy twin inside a GPU tile on a GPU worker,
    else the ``cpu_fallback`` module's function itself. Pickles by name.

    Parameters
    ----------
    name
        The kernel module's name (``moments``, ``baseline`` ...), the same in both trees.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.__name__ = f"cpu_fallback.{name}"

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return TileKernels, (self.name,)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if getattr(_local, "gpu", False):
            return _on_device(getattr(importlib.import_module(f"gpu_kernels.{self.name}"), attr))
        return getattr(importlib.import_module(f"cpu_fallback.{self.name}"), attr)


def run_on_worker(block: Any, compute: Callable[[Any], Any], *, gpu: bool, raw: bool) -> tuple[Any, str, str]:
    """Run one tile's ``compute`` on its block here: ``(result, kernel, fallback)``.

    ``kernel`` is ``cupy`` (a GPU tile on a worker with a usable GPU), ``numba`` (a compiled tile
    on the stored data, ``block`` a :class:`~app.io.fits_reader.RawBlock`) or ``numpy``;
    ``fallback`` says why a GPU tile ran the CPU kernels (empty otherwise).
    """
    if raw:
        from cpu_fallback.compiled import runtime  # noqa: PLC0415

        runtime.configure(int(os.environ.get(KERNEL_THREADS_ENV, "1") or 1), 1)
        return compute(block), "numba", ""
    usable, why = worker_gpu() if gpu else (False, "")
    _local.gpu = usable
    try:
        return compute(block), "cupy" if usable else "numpy", why
    finally:
        _local.gpu = False

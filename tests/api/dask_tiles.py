"""Tile functions for the Dask lane tests: a module the worker processes import cheaply (NumPy only)."""

from __future__ import annotations

import time

import numpy as np

_KEEP: list = []


def row_sums(block: np.ndarray) -> np.ndarray:
    """Σ over channels and columns of each row of a ``(nz, ny, nx)`` block (NaN skipped)."""
    return np.nansum(block, axis=(0, 2))


def slow_row_sums(block: np.ndarray) -> np.ndarray:
    """:func:`row_sums` after 0.2 s, so that cancelling finds tiles still queued."""
    time.sleep(0.2)
    return row_sums(block)


def worker_name(block: np.ndarray) -> str:
    """The name of the Dask worker that read ``block`` (after 0.05 s, so that both workers get tiles)."""
    from distributed import get_worker

    time.sleep(0.05)
    return str(get_worker().name)


def install_emulated_cupy() -> str:
    """Put the CPU emulator of CuPy into this worker process for good (the GPU-worker test) and
    forget the worker's cached CUDA probe; returns the emulated module's name."""
    from app.compute import dask_worker
    from tests.gpu_emulation.install import emulated_cupy

    context = emulated_cupy()
    cupy = context.__enter__()
    _KEEP.append(context)  # a dropped context manager would be closed (and the stand-in removed) by the GC
    dask_worker._gpu_state = None
    return cupy.__name__


def peak_rss_mib() -> float:
    """This process's peak resident set (MiB): ``VmHWM`` (reset at exec, unlike ``ru_maxrss``, which a
    worker spawned from a large pytest process would inherit). Defined here, not in a test module, so
    that running it on a worker does not import the whole application."""
    import resource
    from pathlib import Path

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

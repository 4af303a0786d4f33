"""Start-up of the compiled CPU kernels: thread budget per heavy job and the background warm-up.

``VISIVO_CPU_THREADS`` (default: the usable cores, never more) is split among the heavy slots:
each kernel call of a job uses ``max(1, threads // VISIVO_HEAVY_SLOTS)`` threads, so heavy slots x
threads never exceed the cores. On a CPU backend a daemon thread has the kernels compiled in a
child Python (into the on-disk cache) and then loads them, so no request pays a compile after warm-up;
the first compile of everything takes tens of seconds of one core (README, "Compiled CPU kernels").
"""

from __future__ import annotations

from app.compute.backend import Backend
from app.settings import Settings


def start_compiled_kernels(settings: Settings, backend: Backend) -> None:
    """Configure the compiled kernels' threads; warm them in the background on a CPU backend."""
    from cpu_fallback.compiled import runtime  # noqa: PLC0415 - sets NUMBA_CACHE_DIR before numba loads

    runtime.configure(settings.cpu_threads, settings.effective_heavy_slots)
    if not backend.is_gpu:
        runtime.start_warm_up()

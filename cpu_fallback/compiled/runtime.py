"""Where the compiled kernels keep their cache, how many threads they use, and their warm-up.

Cache. numba compiles each kernel once per argument type and keeps the machine code on disk
(``cache=True``). The directory is ``$NUMBA_CACHE_DIR`` when set, else
``~/.cache/visivo/numba/kernels-<digest of this package's sources>`` (``<tmp>/visivo-numba-<uid>/…``
when the home is not writable); it is set here, before numba is imported. numba re-checks only the
source file of a cached function, not the helpers it inlines from other files, hence the digest;
a user-set ``NUMBA_CACHE_DIR`` should be emptied when these sources change.
A warm cache loads in well under a second; the first compile of every kernel takes seconds
(measured by :func:`warm_up`).

Threads. ``VISIVO_CPU_THREADS`` (default: the usable cores) is the budget of the compiled
kernels. Each heavy job runs its kernels with ``max(1, budget // heavy_slots)`` threads
(:func:`configure`; numba's thread count is per calling thread, set by :func:`threads` around
every kernel call), so heavy slots x threads never exceed the budget, which never exceeds the
cores. Numba's ``omp`` or ``tbb`` threading layers are safe for concurrent callers; under the
``workqueue`` layer (neither installed) kernel calls are serialised by a lock.

Switches. ``VISIVO_COMPILED=0`` in the environment makes :func:`available` false: the jobs then use
the NumPy oracle (for comparisons and debugging). ``NUMBA_DISABLE_JIT=1`` does the same.
``VISIVO_COMPILED_WARMUP=0`` skips the start-up warm-up (kernels then compile, or load from the
cache, on first use).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

_lock = threading.Lock()
_state: dict[str, object] = {"threads": None, "serial": None, "warm_seconds": None, "warm_error": None}
_warm_thread: threading.Thread | None = None


def _cache_dir() -> Path:
    """The on-disk cache directory (created): ``~/.cache/visivo/numba`` or a temporary one."""
    for candidate in (Path.home() / ".cache" / "visivo" / "numba",
                      Path(tempfile.gettempdir()) / f"visivo-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            return candidate
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="visivo-numba-"))


def _sources_digest() -> str:
    """A digest of this package's sources: numba checks only the file of a cached function, not the
    files of the functions it inlines (``rawdata``), so each version of the sources gets its own
    cache directory and a stale kernel is never loaded."""
    h = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _configure_environment() -> None:
    """Set ``NUMBA_CACHE_DIR`` (unless the environment already does) before numba reads it."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(_cache_dir() / f"kernels-{_sources_digest()}")
        if "numba" in sys.modules:  # imported earlier by someone else: let it see the directory
            from numba.core import config  # noqa: PLC0415

            config.reload_config()


_configure_environment()


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _off(name: str) -> bool:
    """True when the environment variable ``name`` says ``0``/``false``/``no``/``off``."""
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


def available() -> bool:
    """True when numba imports, JIT is on and ``VISIVO_COMPILED`` is not ``0``."""
    if _off("VISIVO_COMPILED"):
        return False
    try:
        import numba  # noqa: PLC0415
    except ImportError:
        return False
    return not numba.config.DISABLE_JIT


def configure(cpu_threads: int | None, heavy_slots: int) -> int:
    """Set the threads of one heavy job: ``max(1, min(cpu_threads or cores, cores) // heavy_slots)``.

    Parameters
    ----------
    cpu_threads : int or None
        ``VISIVO_CPU_THREADS``; None means all usable cores.
    heavy_slots : int
        Heavy jobs that may run at once (``VISIVO_HEAVY_SLOTS``).

    Returns
    -------
    int
        Threads per kernel call.
    """
    budget = min(int(cpu_threads or cores()), cores())
    per_job = max(1, budget // max(1, int(heavy_slots)))
    _state["threads"] = per_job
    return per_job


def job_threads() -> int:
    """Threads a kernel call uses (:func:`configure`; default all cores)."""
    return int(_state["threads"] or cores())


#: Voxels per thread below which a kernel call uses fewer threads: starting a parallel region
#: costs tens of microseconds on an idle machine and milliseconds on a busy one.
MIN_VOXELS_PER_THREAD = 1 << 20


@contextlib.contextmanager
def threads(voxels: int | None = None) -> Iterator[None]:
    """Run the enclosed numba kernel calls with :func:`job_threads` threads (this thread only),
    fewer for small work (at least :data:`MIN_VOXELS_PER_THREAD` voxels per thread)."""
    import numba  # noqa: PLC0415

    n = max(1, min(job_threads(), numba.config.NUMBA_NUM_THREADS))
    if voxels is not None:
        n = max(1, min(n, int(voxels) // MIN_VOXELS_PER_THREAD))
    numba.set_num_threads(n)
    serial = _state["serial"]
    if serial is False:
        yield
        return
    with _lock:  # first call (layer not known yet) or the workqueue layer
        yield
        if serial is None:
            with contextlib.suppress(ValueError):
                _state["serial"] = numba.threading_layer() == "workqueue"


def warm_up(cases: list[Callable[[], object]] | None = None) -> float:
    """Compile (or load from the cache) every kernel for the common input types; seconds taken."""
    t0 = time.perf_counter()
    if cases is None:
        from cpu_fallback.compiled.warm_cases import default_cases  # noqa: PLC0415

        cases = default_cases()
    for case in cases:
        case()
    seconds = time.perf_counter() - t0
    _state["warm_seconds"] = seconds
    return seconds


def _compile_in_subprocess() -> None:
    """Run :func:`warm_up` in a child Python (same cache directory), which compiles and writes the
    on-disk cache. Compiling there keeps numba's compiler -- which holds the GIL for seconds and
    swaps the process-wide warning filters (``warnings.catch_warnings``) -- out of the server."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
    code = "from cpu_fallback.compiled import runtime; runtime.warm_up()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=1800)


def start_warm_up() -> threading.Thread | None:
    """Warm the kernels in a daemon thread (once per process); None when numba is unavailable.

    The thread compiles in a child process (:func:`_compile_in_subprocess`), then loads every
    kernel from the cache into this process, so no request pays a compile or a cache load.
    """
    global _warm_thread
    if not available() or _off("VISIVO_COMPILED_WARMUP"):
        return None
    if _warm_thread is None:

        def run() -> None:
            t0 = time.perf_counter()
            try:
                _compile_in_subprocess()
            except (OSError, subprocess.SubprocessError) as exc:  # compiled here instead, below
                _state["warm_error"] = f"compile subprocess: {type(exc).__name__}: {exc}"
            try:
                warm_up()
                _state["warm_seconds"] = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - reported in status(), the NumPy path still works
                _state["warm_error"] = f"{type(exc).__name__}: {exc}"

        _warm_thread = threading.Thread(target=run, name="visivo-numba-warmup", daemon=True)
        _warm_thread.start()
    return _warm_thread


def status() -> dict[str, object]:
    """Compiled-kernel status for the health report: availability, threads, cache, warm-up time."""
    return {
        "available": available(),
        "threads_per_job": job_threads(),
        "cache_dir": os.environ.get("NUMBA_CACHE_DIR", ""),
        "warm_seconds": _state["warm_seconds"],
        "warm_error": _state["warm_error"],
    }

"""Executor of CUDA C kernels on the CPU: compile as C++ with sanitizers, run the launch grid.

How a launch runs
-----------------
1. The kernel source (exactly the text CuPy would hand to NVRTC) is scanned for CUDA features
   the emulator does not implement -- shared memory, barriers, atomics, warp functions; any hit
   raises :class:`UnsupportedCudaFeature` naming the feature.
2. It is compiled by g++ as C++17 with ``cuda_shim.h`` force-included, ``-ffp-contract=off``
   (no FMA contraction: the ``__dmul_rn`` family are single rounded operations) and
   ``-fsanitize=address,undefined -fno-sanitize-recover=all``, then linked with ``runner.cpp``
   into a stand-alone executable. Executables are cached under :func:`cache_dir`, keyed by the
   SHA-256 of source, shim, runner and compiler flags.
3. Each launch runs that executable in a subprocess. AddressSanitizer needs its runtime loaded
   first in the process, which a non-ASan Python cannot do without ``LD_PRELOAD`` of the whole
   interpreter; a separate executable is the reliable way. The runner copies every device
   buffer into its own heap block of exactly the array's byte extent, so an index one past the
   end (or before the start) lands in a red zone and aborts with a report that names the
   kernel source line. Arguments follow CuPy's marshalling (device array -> pointer to its
   first element, NumPy scalar -> its bytes by dtype, Python ``int`` -> int64, ``float`` ->
   float64, ``None`` -> null), and the runner checks every argument against the C++ signature
   of the kernel (a wrong count, size or int/float kind fails, where CUDA would read garbage).
4. Threads run one after the other, twice: forwards (x fastest, then y, z, then blocks alike)
   and, from the same inputs, backwards. Threads of a launch are unordered on a GPU, so a byte
   that differs between the two runs is a race (two threads writing one location, or a thread
   reading another's output): :class:`KernelRace`. The buffers of the forward run come back and
   overwrite the arrays' memory (writes through views reach the parent array, as on a device).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SHIM = HERE / "cuda_shim.h"
RUNNER = HERE / "runner.cpp"

CXX = os.environ.get("CXX", "g++")
CXXFLAGS = (
    "-std=c++17", "-O1", "-g", "-fno-omit-frame-pointer", "-ffp-contract=off", "-fno-fast-math",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-w",
)  # fmt: skip
SANITIZER_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}

#: CUDA features the emulator does not implement, as (regex, description).
UNSUPPORTED: tuple[tuple[str, str], ...] = (
    (r"__shared__", "__shared__ (block shared memory)"),
    (r"\b__syncthreads\w*\b", "__syncthreads (block barrier)"),
    (r"\b__syncwarp\b", "__syncwarp (warp barrier)"),
    (r"\batomic[A-Z]\w*\b", "atomic operations"),
    (r"\b__shfl\w*\b", "warp shuffles (__shfl*)"),
    (r"\b__(?:ballot|any|all|match|reduce_\w+)_sync\b|\b__activemask\b", "warp vote/match/reduce functions"),
    (r"\bwarpSize\b", "warpSize (warp-level programming)"),
    (r"\b__threadfence\w*\b", "memory fences (__threadfence*)"),
    (r"cooperative_groups", "cooperative groups"),
    (r"\bclock(?:64)?\s*\(", "clock()/clock64() (device timers)"),
    (r"\btex\w*\s*<|\bsurf\w*\s*<|cudaTextureObject_t|cudaSurfaceObject_t", "textures/surfaces"),
    (r"__constant__", "__constant__ memory"),
)

#: NVRTC options the emulator accepts; ``--fmad=false`` is what it does anyway.
KNOWN_OPTIONS = re.compile(r"^(--fmad=(true|false)|-std=c\+\+\d+|--std=c\+\+\d+|-lineinfo|--device-debug|-G)$")

_GLOBAL = re.compile(r"__global__\s+void\s+(\w+)\s*\(")
_compile_lock = threading.Lock()


class UnsupportedCudaFeature(NotImplementedError):
    """The kernel uses a CUDA feature the CPU emulator does not implement."""


class KernelFault(RuntimeError):
    """The emulated kernel stopped: a sanitizer report (out-of-bounds access, undefined behaviour)."""


class KernelRace(KernelFault):
    """The kernel's result depends on the order its threads run in (a race between threads)."""


class CompileError(RuntimeError):
    """g++ rejected the kernel source (the message holds the compiler's diagnostics)."""


class LaunchError(TypeError):
    """The launch's arguments do not match the kernel's signature (CuPy would not notice)."""


#: Source transformations applied before compiling (harness tests break kernels on purpose).
_mutations: list[Callable[[str], str]] = []


@contextmanager
def mutated(old: str, new: str) -> Iterator[list[int]]:
    """Compile every kernel source with ``old`` replaced by ``new`` (harness tests break kernels).

    Yields a one-element list holding how many replacements were made, so a test can check
    that its mutation hit the kernel text.
    """
    hits = [0]

    def mutate(source: str) -> str:
        hits[0] += source.count(old)
        return source.replace(old, new)

    _mutations.append(mutate)
    try:
        yield hits
    finally:
        _mutations.remove(mutate)


def cache_dir() -> Path:
    """Where compiled kernels are cached: ``$VISIVO_GPU_EMU_CACHE`` or ``<tmp>/visivo-gpu-emu-<uid>``."""
    path = os.environ.get("VISIVO_GPU_EMU_CACHE") or os.path.join(
        tempfile.gettempdir(), f"visivo-gpu-emu-{os.getuid()}"
    )
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def compiler_available() -> bool:
    """True when the C++ compiler the emulator needs is on ``PATH``."""
    return shutil.which(CXX) is not None


def _strip_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", " ", source, flags=re.S)
    return re.sub(r"//[^\n]*", " ", source)


def check_supported(source: str, options: Sequence[str] = ()) -> None:
    """Raise :class:`UnsupportedCudaFeature` for a feature or NVRTC option the emulator lacks."""
    code = _strip_comments(source)
    for pattern, what in UNSUPPORTED:
        if re.search(pattern, code):
            raise UnsupportedCudaFeature(f"the kernel uses {what}, which the CPU emulator of CUDA does not emulate")
    for option in options:
        if not KNOWN_OPTIONS.match(option):
            raise UnsupportedCudaFeature(f"NVRTC option {option!r} is not emulated")


def kernel_names(source: str) -> list[str]:
    """Names of the ``__global__`` functions of a source."""
    return _GLOBAL.findall(_strip_comments(source))


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:24]


def _run_cxx(args: list[str]) -> None:
    proc = subprocess.run([CXX, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CompileError(f"{CXX} failed:\n{proc.stderr[-6000:]}")


def _runner_object() -> Path:
    flags = " ".join(CXXFLAGS)
    out = cache_dir() / f"runner-{_digest(RUNNER.read_bytes(), SHIM.read_bytes(), flags)}.o"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.o")
        _run_cxx([*CXXFLAGS, f"-I{HERE}", "-c", str(RUNNER), "-o", str(tmp)])
        os.replace(tmp, out)
    return out


def build(source: str, options: Sequence[str] = ()) -> Path:
    """Compile ``source`` (after any active mutation) into a cached runner executable."""
    for mutate in _mutations:
        source = mutate(source)
    check_supported(source, options)
    names = kernel_names(source)
    if not names:
        raise CompileError("no __global__ function in the source")
    table = ",\n".join(f"    VISIVO_EMU_KERNEL({n})" for n in names)
    unit = (
        f"{source}\n\n// ---- emulator kernel table ----\n"
        f"extern const visivo_emu::Kernel visivo_emu_table[] = {{\n{table}\n}};\n"
        f"extern const int visivo_emu_count = {len(names)};\n"
    )
    flags = " ".join(CXXFLAGS)
    key = _digest(unit, SHIM.read_bytes(), RUNNER.read_bytes(), flags)
    exe = cache_dir() / f"kernel-{key}"
    if exe.exists():
        return exe
    with _compile_lock:
        if exe.exists():
            return exe
        runner = _runner_object()
        src = cache_dir() / f"kernel-{key}.cu.cpp"  # kept: sanitizer reports point into it
        tmp_src = src.with_name(f"{src.name}.{os.getpid()}.tmp")
        tmp_src.write_text(unit)
        os.replace(tmp_src, src)
        tmp = exe.with_name(f"{exe.name}.{os.getpid()}.tmp")
        _run_cxx([*CXXFLAGS, "-include", str(SHIM), "-x", "c++", str(src), "-x", "none", str(runner), "-o", str(tmp)])
        os.replace(tmp, exe)
    return exe


def _marshal_value(x: Any) -> tuple[str, bytes]:
    """CuPy's scalar marshalling: NumPy scalars by dtype, Python int/float/bool as int64/float64/bool."""
    if isinstance(x, bool):
        x = np.bool_(x)
    elif isinstance(x, int):
        x = np.int64(x)
    elif isinstance(x, float):
        x = np.float64(x)
    if not isinstance(x, np.generic) or x.dtype.kind not in "biuf":
        raise TypeError(f"Unsupported type {type(x)}")
    kind = "f" if x.dtype.kind == "f" else ("b" if x.dtype.kind == "b" else "i")
    return kind, x.tobytes()


def _extent(raw: np.ndarray) -> tuple[int, int]:
    """Byte interval ``[low, high)`` of the memory an array view spans."""
    low, high = np.lib.array_utils.byte_bounds(raw)
    return low, high


def launch(exe: Path, name: str, grid: tuple[int, int, int], block: tuple[int, int, int], args: Sequence[Any],
           as_raw: Callable[[Any], np.ndarray | None]) -> None:
    """Run ``name`` of the compiled ``exe`` over ``grid`` x ``block`` with CuPy-marshalled ``args``.

    ``as_raw(arg)`` returns the NumPy memory behind a device array argument (None for others).
    Arguments whose memory overlaps share one heap block in the runner, as they share memory on
    the device.
    """
    raws: list[np.ndarray | None] = [as_raw(a) for a in args]
    spans = sorted({_extent(r) for r in raws if r is not None})
    groups: list[list[int]] = []  # merged [low, high) intervals
    for low, high in spans:
        if groups and low < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], high)
        else:
            groups.append([low, high])
    blob = bytearray(b"VEMU1")
    blob += struct.pack("<I", len(name)) + name.encode()
    blob += struct.pack("<3I", *grid) + struct.pack("<3I", *block)
    blob += struct.pack("<I", len(groups))
    for low, high in groups:
        blob += struct.pack("<Q", high - low) + ctypes.string_at(low, high - low)
    blob += struct.pack("<I", len(args))
    for arg, raw in zip(args, raws, strict=True):
        if raw is not None or arg is None:
            if raw is None:
                blob += b"p" + struct.pack("<IQ", 0xFFFFFFFF, 0)
            else:
                ptr = raw.__array_interface__["data"][0]
                alow, ahigh = _extent(raw)
                g = next(i for i, (low, high) in enumerate(groups)
                         if low <= alow and ahigh <= high and (alow < high or alow == low))
                blob += b"p" + struct.pack("<IQ", g, ptr - groups[g][0])
        else:
            kind, data = _marshal_value(arg)
            blob += kind.encode() + struct.pack("<I", len(data)) + data
    env = {**os.environ, **SANITIZER_ENV}
    proc = subprocess.run([str(exe)], input=bytes(blob), capture_output=True, env=env, check=False)
    err = proc.stderr.decode(errors="replace")
    if proc.returncode == 3 and "VISIVO_EMU_ERROR: RACE" in err:
        raise KernelRace(f"kernel {name}: " + err.split("VISIVO_EMU_ERROR: RACE: ", 1)[1].strip())
    if proc.returncode == 3 and "VISIVO_EMU_ERROR" in err:
        raise LaunchError(err.split("VISIVO_EMU_ERROR: ", 1)[1].strip())
    if proc.returncode != 0:
        raise KernelFault(f"kernel {name} stopped (exit status {proc.returncode}):\n{_summary(err)}")
    out = memoryview(proc.stdout)
    pos = 0
    for low, high in groups:
        n = high - low
        ctypes.memmove(low, bytes(out[pos:pos + n]), n)
        pos += n
    if pos != len(out):
        raise KernelFault(f"kernel {name}: runner returned {len(out)} bytes, expected {pos}")


def _summary(report: str) -> str:
    """The lines of a sanitizer report that say what and where (kernel source frames first)."""
    lines = report.splitlines()
    keep = [ln for ln in lines if "ERROR:" in ln or "runtime error" in ln or ".cu.cpp" in ln
            or "READ of size" in ln or "WRITE of size" in ln or "located" in ln]
    return "\n".join((keep or lines)[:40])

"""A CuPy stand-in backed by NumPy, for running the ``gpu_kernels`` tree on a CPU in the tests.

:func:`build_modules` returns fresh ``cupy``, ``cupy.cuda`` (``runtime``, ``memory``),
``cupyx``, ``cupyx.scipy`` (``ndimage``, ``special``) and ``cupyx.profiler`` module objects;
:mod:`tests.gpu_emulation.install` puts them in ``sys.modules`` for one test. Nothing here is
imported by the application.

- Array functions: every NumPy function, ufunc and dtype is available as ``cupy.<name>``
  on device arrays (:mod:`~tests.gpu_emulation.device_array`), with CuPy's host/device rules.
  ``cupy.empty``/``empty_like`` return memory filled with the byte ``0x7f`` (float32
  3.4e38, int32 2139062143) so a kernel that leaves outputs unwritten fails its parity test.
- ``RawKernel``/``RawModule``: run by :mod:`~tests.gpu_emulation.executor` (C++ with
  sanitizers); ``ElementwiseKernel``/``ReductionKernel``/``fuse`` raise (the tree uses none).
- ``cupy.cuda`` (classes in :mod:`~tests.gpu_emulation.fake_cuda`): ``Device`` (context manager,
  current device per thread), ``Stream``/``Event``
  (synchronous: every operation completes before it returns), ``runtime`` queries of
  ``devices`` emulated devices named "CPU emulator of CUDA", memory pools whose methods have
  CuPy's signatures but do not track allocations.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import scipy.ndimage
import scipy.special

from tests.gpu_emulation import executor
from tests.gpu_emulation.device_array import STATS, MemoryPointer, ndarray, unwrap, wrap, wrap_callable
from tests.gpu_emulation.fake_cuda import (
    DEVICE_NAME,
    EMULATED_TOTAL_MEMORY,
    CUDADriverError,
    CUDARuntimeError,
    Device,
    Event,
    MemoryPool,
    OutOfMemoryError,
    PinnedMemoryPool,
    Stream,
    _current,
    device_count,
    get_current_stream,
    get_elapsed_time,
    set_device_count,
)

_POISON = 0x7F


class _Launcher:
    """A kernel of a compiled source: ``kernel(grid, block, args, *, shared_mem=0, stream=None)``."""

    def __init__(self, code: str, name: str, options: tuple[str, ...]) -> None:
        self.code, self.name, self.options = code, name, options

    def compile(self, log_stream: Any = None) -> None:
        executor.build(self.code, self.options)

    @property
    def max_threads_per_block(self) -> int:
        return 1024

    @property
    def attributes(self) -> dict[str, int]:
        return {"max_threads_per_block": 1024, "shared_size_bytes": 0, "const_size_bytes": 0,
                "local_size_bytes": 0, "num_regs": 32, "ptx_version": 90, "binary_version": 90}

    def __call__(self, grid: tuple, block: tuple, args: Any, *, shared_mem: int = 0, stream: Any = None,
                 enable_cooperative_groups: bool = False) -> None:
        if not isinstance(grid, tuple) or not isinstance(block, tuple):
            raise TypeError("grid and block must be tuples (CuPy's Function.__call__ signature)")
        if not 1 <= len(grid) <= 3 or not 1 <= len(block) <= 3:
            raise ValueError("grid and block take 1 to 3 dimensions")
        g = tuple(max(1, int(v)) for v in (grid + (1, 1))[:3])  # CuPy launches at least one block
        b = tuple(max(1, int(v)) for v in (block + (1, 1))[:3])
        if b[0] * b[1] * b[2] > 1024 or b[0] > 1024 or b[1] > 1024 or b[2] > 64:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: block {b} exceeds the device limits")
        if g[0] > 2**31 - 1 or g[1] > 65535 or g[2] > 65535:
            raise CUDADriverError(f"CUDA_ERROR_INVALID_VALUE: grid {g} exceeds the device limits")
        if shared_mem:
            raise executor.UnsupportedCudaFeature("dynamic shared memory (shared_mem > 0) is not emulated")
        if enable_cooperative_groups:
            raise executor.UnsupportedCudaFeature("cooperative launches are not emulated")
        exe = executor.build(self.code, self.options)
        STATS["launches"] += 1
        executor.launch(exe, self.name, g, b, tuple(args),
                        lambda a: a._raw if isinstance(a, ndarray) else None)


class RawKernel(_Launcher):
    """``cupy.RawKernel(code, name, options=(), backend='nvrtc', ...)`` (compiled at first launch)."""

    def __init__(self, code: str, name: str, options: tuple[str, ...] = (), backend: str = "nvrtc",
                 translate_cucomplex: bool = False, *, enable_cooperative_groups: bool = False,
                 jitify: bool = False) -> None:
        if jitify:
            raise executor.UnsupportedCudaFeature("jitify is not emulated")
        super().__init__(code, name, tuple(options))


class RawModule:
    """``cupy.RawModule(code=..., options=...)``; ``get_function`` checks the name like the driver."""

    def __init__(self, *, code: str | None = None, path: str | None = None, options: tuple[str, ...] = (),
                 backend: str = "nvrtc", translate_cucomplex: bool = False, enable_cooperative_groups: bool = False,
                 name_expressions: Any = None, jitify: bool = False) -> None:
        if code is None:
            raise executor.UnsupportedCudaFeature("RawModule(path=...) loads a cubin/PTX: not emulated")
        if name_expressions or jitify:
            raise executor.UnsupportedCudaFeature("name_expressions (C++ templates) and jitify are not emulated")
        self.code, self.options = code, tuple(options)

    def compile(self, log_stream: Any = None) -> None:
        executor.build(self.code, self.options)

    def get_function(self, name: str) -> _Launcher:
        if name not in executor.kernel_names(self.code):
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name})")
        return _Launcher(self.code, name, self.options)


def _unsupported(what: str):
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise executor.UnsupportedCudaFeature(f"{what} is not emulated by the CuPy stand-in")

    return fail


class _UfuncProxy:
    """A NumPy ufunc on device arrays (``__call__`` and ``reduce``/``accumulate``/``outer``/``at``)."""

    def __init__(self, ufunc: np.ufunc) -> None:
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return wrap_callable(self._ufunc, self.__name__)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ufunc, name)
        return wrap_callable(attr, f"{self.__name__}.{name}") if callable(attr) else attr


class _IndexTrick:
    """``cupy.mgrid``/``ogrid``/``r_``/``c_``: NumPy's index tricks returning device arrays."""

    def __init__(self, trick: Any) -> None:
        self._trick = trick

    def __getitem__(self, key: Any) -> Any:
        return wrap(self._trick[unwrap(key, strict=True)])


# -- creation and transfer functions (host arrays allowed) ------------------------------------
def _to_device(obj: Any, dtype: Any = None, order: str = "K", copy: bool = True) -> ndarray:
    if isinstance(obj, ndarray):
        raw = obj._raw
        same = (dtype is None or np.dtype(dtype) == raw.dtype) and (
            order in ("K", "A", None) or (order == "C" and raw.flags.c_contiguous)
            or (order == "F" and raw.flags.f_contiguous))
        if same and not copy:
            return obj
        return wrap(np.array(raw, dtype=dtype, order=order or "K", copy=True))
    STATS["uploads"] += 1
    return wrap(np.array(unwrap(obj, strict=False), dtype=dtype, order=order or "K", copy=True))


def asarray(a: Any, dtype: Any = None, order: str | None = None, *, blocking: bool = False) -> ndarray:
    """Device array of ``a`` (the same object when already a device array of that dtype)."""
    return _to_device(a, dtype, order or "K", copy=False)


def array(obj: Any, dtype: Any = None, copy: bool = True, order: str = "K", subok: bool = False,
          ndmin: int = 0, *, blocking: bool = False) -> ndarray:
    out = _to_device(obj, dtype, order, copy=bool(copy))
    while out.ndim < ndmin:
        out = out[None]
    return out


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: np.ndarray | None = None,
            *, blocking: bool = True) -> np.ndarray:
    """Host copy of a device array; host inputs are returned as ``numpy.asarray`` (CuPy)."""
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    result = np.asarray(a, order=order)
    if out is not None:
        out[...] = result
        return out
    return result


def _poison(raw: np.ndarray) -> np.ndarray:
    """Fill fresh memory with the byte 0x7f in every position (stale device memory stand-in)."""
    if raw.size:
        raw[...] = np.frombuffer(bytes([_POISON]) * raw.itemsize, dtype=raw.dtype)[0]
    return raw


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    return wrap(_poison(np.empty(shape, dtype=dtype, order=order)))


def empty_like(prototype: Any, dtype: Any = None, order: str = "K", subok: Any = None, shape: Any = None) -> ndarray:
    return wrap(_poison(np.empty_like(unwrap(prototype, strict=True), dtype=dtype, order=order, shape=shape)))


def get_array_module(*args: Any) -> types.ModuleType:
    import sys  # noqa: PLC0415

    return sys.modules["cupy"] if any(isinstance(a, ndarray) for a in args) else np


_OWN = {
    "ndarray": ndarray, "asarray": asarray, "array": array, "asanyarray": asarray, "asnumpy": asnumpy,
    "empty": empty, "empty_like": empty_like, "get_array_module": get_array_module,
    "RawKernel": RawKernel, "RawModule": RawModule,
    "ElementwiseKernel": _unsupported("cupy.ElementwiseKernel"),
    "ReductionKernel": _unsupported("cupy.ReductionKernel"),
    "fuse": _unsupported("cupy.fuse"),
    "get_default_memory_pool": None, "get_default_pinned_memory_pool": None,  # filled per build
    "is_available": lambda: True, "__version__": "13.0.0+cpu-emulator",
}
_NOT_IN_CUPY = {"random", "testing", "ma", "char", "rec", "ctypeslib", "lib", "polynomial",
                "emath", "typing", "f2py", "distutils", "matrix", "asmatrix", "memmap", "save", "load",
                "savez", "loadtxt", "genfromtxt", "fromfile", "frombuffer", "set_printoptions"}


def _numpy_getattr(module_name: str):
    cache: dict[str, Any] = {}

    def __getattr__(name: str) -> Any:  # noqa: N807  (PEP 562 module hook)
        if name in cache:
            return cache[name]
        if name.startswith("_") or name in _NOT_IN_CUPY or not hasattr(np, name):
            raise AttributeError(f"module {module_name!r} (CuPy stand-in) has no attribute {name!r}")
        attr = getattr(np, name)
        if isinstance(attr, np.ufunc):
            value: Any = _UfuncProxy(attr)
        elif name in ("mgrid", "ogrid", "r_", "c_"):
            value = _IndexTrick(attr)
        elif isinstance(attr, (type, types.ModuleType)) or not callable(attr):
            value = attr
        else:
            value = wrap_callable(attr, name)
        cache[name] = value
        return value

    return __getattr__


def _wrapped_module(name: str, source: types.ModuleType) -> types.ModuleType:
    mod = types.ModuleType(name, f"CuPy stand-in: {source.__name__} on device arrays")
    for attr in dir(source):
        value = getattr(source, attr)
        if not attr.startswith("_") and callable(value) and not isinstance(value, type):
            setattr(mod, attr, wrap_callable(value, attr))
    return mod


def build_modules(devices: int = 1) -> dict[str, types.ModuleType]:
    """Fresh stand-in modules, keyed by their import name, emulating ``devices`` CUDA devices."""
    set_device_count(devices)
    pool, pinned = MemoryPool(), PinnedMemoryPool()

    runtime = types.ModuleType("cupy.cuda.runtime", "CUDA runtime queries of the emulated devices")
    runtime.CUDARuntimeError = CUDARuntimeError
    runtime.is_hip = False
    runtime.getDeviceCount = device_count
    runtime.getDevice = _current
    runtime.setDevice = lambda device: Device(device).use()
    runtime.runtimeGetVersion = lambda: 12040
    runtime.driverGetVersion = lambda: 12040
    runtime.deviceSynchronize = lambda: None
    runtime.memGetInfo = lambda: (EMULATED_TOTAL_MEMORY, EMULATED_TOTAL_MEMORY)

    def get_device_properties(device: int) -> dict[str, Any]:
        Device(device)  # validates the ordinal
        return {"name": DEVICE_NAME.encode(), "totalGlobalMem": EMULATED_TOTAL_MEMORY, "major": 9, "minor": 0,
                "multiProcessorCount": 1, "maxThreadsPerBlock": 1024, "warpSize": 32, "clockRate": 0,
                "memoryClockRate": 0, "memoryBusWidth": 0, "sharedMemPerBlock": 0, "l2CacheSize": 0}

    runtime.getDeviceProperties = get_device_properties

    memory = types.ModuleType("cupy.cuda.memory", "memory pools (not tracking allocations)")
    memory.OutOfMemoryError = OutOfMemoryError
    memory.MemoryPool = MemoryPool
    memory.MemoryPointer = MemoryPointer

    cuda = types.ModuleType("cupy.cuda", "CUDA devices, streams and memory of the stand-in")
    for name, value in {
        "Device": Device, "Stream": Stream, "Event": Event, "get_elapsed_time": get_elapsed_time,
        "get_current_stream": get_current_stream, "MemoryPool": MemoryPool, "PinnedMemoryPool": PinnedMemoryPool,
        "runtime": runtime, "memory": memory, "is_available": lambda: device_count() > 0,
        "get_device_id": _current, "CUDARuntimeError": CUDARuntimeError, "CUDADriverError": CUDADriverError,
    }.items():
        setattr(cuda, name, value)

    cupy = types.ModuleType("cupy", "CuPy stand-in backed by NumPy (tests/gpu_emulation)")
    for name, value in _OWN.items():
        setattr(cupy, name, value)
    cupy.get_default_memory_pool = lambda: pool
    cupy.get_default_pinned_memory_pool = lambda: pinned
    cupy.cuda = cuda
    cupy.linalg = _wrapped_module("cupy.linalg", np.linalg)
    cupy.fft = _wrapped_module("cupy.fft", np.fft)
    cupy.__getattr__ = _numpy_getattr("cupy")
    cupy.__path__ = []  # a package, so that ``import cupy.cuda`` works

    ndimage = _wrapped_module("cupyx.scipy.ndimage", scipy.ndimage)
    special = _wrapped_module("cupyx.scipy.special", scipy.special)
    cx_scipy = types.ModuleType("cupyx.scipy")
    cx_scipy.ndimage, cx_scipy.special, cx_scipy.__path__ = ndimage, special, []
    profiler = types.ModuleType("cupyx.profiler")
    profiler.benchmark = _unsupported("cupyx.profiler.benchmark (device timing)")
    cupyx = types.ModuleType("cupyx", "cupyx stand-in")
    cupyx.scipy, cupyx.profiler, cupyx.__path__ = cx_scipy, profiler, []
    return {
        "cupy": cupy, "cupy.linalg": cupy.linalg, "cupy.fft": cupy.fft, "cupy.cuda": cuda,
        "cupy.cuda.runtime": runtime, "cupy.cuda.memory": memory,
        "cupyx": cupyx, "cupyx.scipy": cx_scipy, "cupyx.scipy.ndimage": ndimage,
        "cupyx.scipy.special": special, "cupyx.profiler": profiler,
    }

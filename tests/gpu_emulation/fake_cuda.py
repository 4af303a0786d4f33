"""``cupy.cuda`` of the CuPy stand-in: devices, streams, events and memory pools.

Devices are emulated (``set_device_count``); the current device is per thread, as in CUDA.
Work is synchronous, so streams and events only keep CuPy's signatures; memory pools do not
track allocations.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.gpu_emulation.device_array import MemoryPointer

EMULATED_TOTAL_MEMORY = 8 << 30  # bytes reported per emulated device
DEVICE_NAME = "CPU emulator of CUDA (tests/gpu_emulation)"

_state = threading.local()
_device_count = 1


def set_device_count(devices: int) -> None:
    """How many devices ``cupy.cuda.runtime.getDeviceCount`` reports."""
    global _device_count
    _device_count = devices


def device_count() -> int:
    return _device_count


class CUDARuntimeError(RuntimeError):
    """``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""


class CUDADriverError(RuntimeError):
    """``cupy.cuda.driver.CUDADriverError``."""


class OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError(size, total, limit=0)``."""

    def __init__(self, size: int = 0, total: int = 0, limit: int = 0) -> None:
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")


def _current() -> int:
    return getattr(_state, "device", 0)


class Device:
    """``cupy.cuda.Device``: selects the current device of the calling thread."""

    def __init__(self, device: Any = None) -> None:
        self.id = _current() if device is None else int(device)
        if not 0 <= self.id < _device_count:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self._stack: list[int] = []

    def __enter__(self) -> Device:
        self._stack.append(_current())
        _state.device = self.id
        return self

    def __exit__(self, *exc: Any) -> None:
        _state.device = self._stack.pop()

    def use(self) -> None:
        _state.device = self.id

    def synchronize(self) -> None:
        """Every emulated operation is synchronous: nothing to wait for."""

    @property
    def compute_capability(self) -> str:
        return "90"

    @property
    def mem_info(self) -> tuple[int, int]:
        return EMULATED_TOTAL_MEMORY, EMULATED_TOTAL_MEMORY

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id} (emulated)>"


class Stream:
    """``cupy.cuda.Stream``: work is synchronous in the emulator, so a stream only orders nothing."""

    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0) -> None:
        self.ptr = 0 if null else id(self)
        self._prev: list[Stream] = []

    def __enter__(self) -> Stream:
        self._prev.append(get_current_stream())
        _state.stream = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _state.stream = self._prev.pop()

    def use(self) -> Stream:
        _state.stream = self
        return self

    def synchronize(self) -> None:
        """Nothing is pending on an emulated stream."""

    @property
    def done(self) -> bool:
        return True

    def record(self, event: Event | None = None) -> Event:
        event = event or Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        """Events complete when recorded."""


Stream.null = Stream(null=True)


def get_current_stream(device_id: int = -1) -> Stream:
    return getattr(_state, "stream", Stream.null)


class Event:
    """``cupy.cuda.Event``; records host wall time (not device time)."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self.time = 0.0

    def record(self, stream: Stream | None = None) -> None:
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        """Recorded events are complete."""

    @property
    def done(self) -> bool:
        return True


def get_elapsed_time(start: Event, end: Event) -> float:
    """Milliseconds between two events (host time: the emulator has no device clock)."""
    return (end.time - start.time) * 1e3


class MemoryPool:
    """``cupy.cuda.MemoryPool`` with CuPy's method signatures; the emulator does not pool memory."""

    def __init__(self, allocator: Any = None) -> None:
        self._limit = 0

    def malloc(self, size: int) -> MemoryPointer:
        raise NotImplementedError("the CuPy stand-in does not emulate raw device allocations")

    def free_all_blocks(self, stream: Any = None) -> None:
        """No cached blocks to free."""

    def free_all_free(self) -> None:
        """No cached blocks to free."""

    def n_free_blocks(self) -> int:
        return 0

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_bytes(self) -> int:
        return 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        if fraction is not None:
            size = int(fraction * EMULATED_TOTAL_MEMORY)
        self._limit = int(size or 0)

    def get_limit(self) -> int:
        return self._limit


class PinnedMemoryPool(MemoryPool):
    """``cupy.cuda.PinnedMemoryPool``."""

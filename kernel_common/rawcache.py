"""Compiled CUDA kernels, cached per device, with project-prefixed names.

Every GPU kernel module that compiles ``RawKernel`` source goes through :func:`raw_kernel`, so
the compile-once rule lives in one place. A kernel's entry point is named ``visivo_<name>``
(:data:`PREFIX`) so it never collides with CuPy's own kernels in a profile or a cache; the
source refers to it as ``KERNEL_NAME``, replaced here. Compile-time variants are ``#define``
lines prepended to the source. CuPy is imported lazily.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: Prefix of every project kernel's entry point.
PREFIX = "visivo_"

#: Compiled kernels by (device id, name, defines, options). The only module-level state.
_CACHE: dict[tuple[int, str, tuple[tuple[str, Any], ...], tuple[str, ...]], Any] = {}


def kernel_name(name: str) -> str:
    """The entry-point name ``visivo_<name>`` of kernel ``name``."""
    return name if name.startswith(PREFIX) else PREFIX + name


def defines_text(defines: Iterable[tuple[str, Any]]) -> str:
    """``#define NAME value`` lines (values by ``repr`` for floats, ``str`` otherwise)."""
    return "".join(f"#define {k} {v!r}\n" if isinstance(v, float) else f"#define {k} {v}\n" for k, v in defines)


def raw_kernel(
    name: str, source: str, *, defines: Iterable[tuple[str, Any]] = (), options: Iterable[str] = ()
) -> Any:
    """The compiled kernel ``visivo_<name>`` of ``source`` for the current device (memoised).

    Parameters
    ----------
    name : str
        Kernel name without the prefix; ``KERNEL_NAME`` in ``source`` becomes ``visivo_<name>``.
    source : str
        CUDA C source holding ``extern "C" __global__ void KERNEL_NAME(...)``.
    defines : iterable of (str, value), optional
        Compile-time constants/flags, prepended as ``#define`` lines (part of the cache key).
    options : iterable of str, optional
        NVRTC options, e.g. ``("--fmad=false",)``.

    Returns
    -------
    cupy.RawKernel
    """
    import cupy as cp  # noqa: PLC0415

    defs, opts = tuple(defines), tuple(options)
    key = (int(cp.cuda.runtime.getDevice()), name, defs, opts)
    kern = _CACHE.get(key)
    if kern is None:
        full = kernel_name(name)
        code = defines_text(defs) + source.replace("KERNEL_NAME", full)
        kern = _CACHE[key] = cp.RawKernel(code, full, options=opts)
    return kern


def check_float32_cube(a: Any, what: str) -> None:
    """Raise unless ``a`` is a 3-D float32 array whose x axis is contiguous (raw kernels ignore strides).

    Raises
    ------
    ValueError
        Not ``(spectral, y, x)``, or strides a raw kernel cannot follow.
    TypeError
        Not float32.
    """
    if a.ndim != 3:
        raise ValueError(f"expected a (spectral, y, x) cube, got shape {a.shape}")
    if str(a.dtype) != "float32":
        raise TypeError(f"the GPU {what} kernel needs a float32 cube, got {a.dtype}")
    if a.strides[2] != 4 or a.strides[0] % 4 or a.strides[1] % 4 or min(a.strides) < 0:
        raise ValueError("the x axis must be contiguous (use cupy.ascontiguousarray): raw kernels ignore strides")

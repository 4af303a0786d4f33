"""``ndarray`` of the CuPy stand-in: NumPy memory behind CuPy's device-array rules.

The array is *not* a ``numpy.ndarray``, so the host/device boundary behaves as with CuPy:

- implicit conversion to NumPy (``np.asarray(a)``, ``np.testing`` on a device array) raises
  ``TypeError``, as CuPy does; ``a.get()`` / ``cupy.asnumpy(a)`` copy to the host;
- a host ``numpy.ndarray`` given to a ``cupy`` function, a ufunc or an operator together with a
  device array raises ``TypeError("Unsupported type ...")``, as CuPy does (NumPy scalars and
  Python numbers are fine);
- NumPy functions called on device arrays dispatch to the stand-in (CuPy implements
  ``__array_function__`` / ``__array_ufunc__`` the same way) and return device arrays;
- reductions to a single value return 0-d device arrays (CuPy), not NumPy scalars.

Every other attribute and method is NumPy's, applied to the device memory, with array results
wrapped back as device arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

#: What crossed the emulated host/device boundary: ``uploads``, ``downloads``, ``launches``.
STATS: Counter[str] = Counter()

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)


class MemoryPointer:
    """``ndarray.data`` of CuPy: the device address of the first element (``.ptr``)."""

    def __init__(self, ptr: int, device_id: int = 0) -> None:
        self.ptr = ptr
        self.device_id = device_id

    def __int__(self) -> int:
        return self.ptr


class ndarray(NDArrayOperatorsMixin):  # noqa: N801  (CuPy's name)
    """A device array of the stand-in; the NumPy memory is ``self._raw`` (never exposed implicitly)."""

    __array_priority__ = 100.0

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None,
                 order: str = "C") -> None:
        if memptr is not None or strides is not None:
            raise NotImplementedError("the CuPy stand-in does not emulate ndarray(memptr=..., strides=...)")
        self._raw = np.empty(shape, dtype=dtype, order=order)
        if self._raw.size:  # fresh device memory holds stale bytes: poison it (see fake_cupy.empty)
            self._raw[...] = np.frombuffer(b"\x7f" * self._raw.itemsize, dtype=self._raw.dtype)[0]
        self._device_id = 0

    @classmethod
    def _from_raw(cls, raw: np.ndarray, device_id: int = 0) -> ndarray:
        obj = cls.__new__(cls)
        obj._raw = raw
        obj._device_id = device_id
        return obj

    # -- host <-> device ------------------------------------------------------------------
    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(_IMPLICIT)

    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None, blocking: bool = True):
        """Copy to the host (a new ``numpy.ndarray``, or into ``out``)."""
        STATS["downloads"] += 1
        if out is not None:
            out[...] = self._raw
            return out
        return np.array(self._raw, order=order, copy=True)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy a host array of the same shape into this array."""
        if not isinstance(arr, np.ndarray) or arr.shape != self.shape:
            raise ValueError("set: a numpy.ndarray of the same shape is required")
        self._raw[...] = arr

    def tolist(self) -> Any:
        return self._raw.tolist()

    def item(self, *args: Any) -> Any:
        return self._raw.item(*args)

    # -- device attributes ---------------------------------------------------------------
    @property
    def data(self) -> MemoryPointer:
        return MemoryPointer(self._raw.__array_interface__["data"][0], self._device_id)

    @property
    def device(self) -> Any:
        from tests.gpu_emulation.fake_cuda import Device  # noqa: PLC0415

        return Device(self._device_id)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._raw.shape

    @shape.setter
    def shape(self, value: Any) -> None:
        self._raw = self._raw.reshape(value)

    dtype = property(lambda self: self._raw.dtype)
    ndim = property(lambda self: self._raw.ndim)
    size = property(lambda self: self._raw.size)
    strides = property(lambda self: self._raw.strides)
    nbytes = property(lambda self: self._raw.nbytes)
    itemsize = property(lambda self: self._raw.itemsize)
    flags = property(lambda self: self._raw.flags)
    T = property(lambda self: wrap(self._raw.T))
    real = property(lambda self: wrap(self._raw.real))
    imag = property(lambda self: wrap(self._raw.imag))
    base = property(lambda self: None if self._raw.base is None else wrap(self._raw.base))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        attr = getattr(self._raw, name)
        return wrap_callable(attr, name) if callable(attr) else wrap(attr)

    # -- protocol --------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        raw_in = unwrap(inputs, strict=True)
        raw_kw = unwrap(kwargs, strict=True)
        return wrap(getattr(ufunc, method)(*raw_in, **raw_kw))

    def __array_function__(self, func: Callable, types: Any, args: Any, kwargs: Any) -> Any:
        return wrap(func(*unwrap(args, strict=True), **unwrap(kwargs, strict=True)))

    def __getitem__(self, key: Any) -> Any:
        return wrap(self._raw[unwrap(key, strict=False)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._raw[unwrap(key, strict=False)] = unwrap(value, strict=False)

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (wrap(self._raw[i]) for i in range(len(self._raw)))

    def __bool__(self) -> bool:
        return bool(self._raw)

    def __float__(self) -> float:
        return float(self._raw)

    def __int__(self) -> int:
        return int(self._raw)

    def __complex__(self) -> complex:
        return complex(self._raw)

    def __index__(self) -> int:
        if self.ndim != 0 or self.dtype.kind not in "iub":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._raw)

    def __format__(self, spec: str) -> str:
        return self._raw.__format__(spec)

    def __repr__(self) -> str:
        return repr(self._raw)

    def __str__(self) -> str:
        return str(self._raw)

    def __copy__(self) -> ndarray:
        return wrap(self._raw.copy())

    def __deepcopy__(self, memo: Any) -> ndarray:
        return wrap(self._raw.copy())

    def __reduce__(self):
        raise TypeError("the CuPy stand-in does not pickle device arrays (use .get())")

    __hash__ = None  # type: ignore[assignment]


def unwrap(obj: Any, *, strict: bool) -> Any:
    """Replace device arrays by their NumPy memory, recursively in tuples/lists/dicts.

    ``strict``: a host ``numpy.ndarray`` raises ``TypeError`` as it does in CuPy functions.
    """
    if isinstance(obj, ndarray):
        return obj._raw
    if isinstance(obj, np.ndarray):
        if strict:
            raise TypeError(f"Unsupported type {type(obj)}: a host numpy.ndarray was given where CuPy needs a "
                            "device array (cupy.asarray it first)")
        return obj
    if isinstance(obj, tuple):
        items = [unwrap(x, strict=strict) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [unwrap(x, strict=strict) for x in obj]
    if isinstance(obj, dict):
        return {k: unwrap(v, strict=strict) for k, v in obj.items()}
    return obj


def wrap(obj: Any) -> Any:
    """Wrap NumPy results as device arrays (NumPy scalars become 0-d device arrays, as in CuPy)."""
    if isinstance(obj, np.ndarray):
        return ndarray._from_raw(obj)
    if isinstance(obj, np.generic):
        return ndarray._from_raw(np.asarray(obj))
    if isinstance(obj, tuple):
        items = [wrap(x) for x in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [wrap(x) for x in obj]
    return obj


def wrap_callable(func: Callable, name: str, *, strict: bool = True) -> Callable:
    """``func`` taking and returning device arrays (host arrays rejected when ``strict``)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return wrap(func(*unwrap(args, strict=strict), **unwrap(kwargs, strict=strict)))

    call.__name__ = name
    call.__doc__ = f"CuPy stand-in for numpy's {name} (device arrays in and out)."
    return call

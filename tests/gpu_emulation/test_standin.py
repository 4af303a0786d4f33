"""The CuPy stand-in keeps CuPy's host/device rules, so host/device mix-ups fail as on a GPU."""

from __future__ import annotations

import sys

import numpy as np
import pytest


def test_transfers_copy_and_device_arrays_are_not_numpy(cp) -> None:
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = cp.asarray(host)
    host[0, 0] = 99.0  # the upload was a copy
    assert isinstance(dev, cp.ndarray) and not isinstance(dev, np.ndarray)
    assert cp.asarray(dev) is dev and cp.asarray(dev, dtype=cp.float64) is not dev
    back = cp.asnumpy(dev)
    assert type(back) is np.ndarray and back[0, 0] == 0.0 and dev.get()[0, 0] == 0.0
    np.testing.assert_array_equal(back, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_implicit_host_conversion_and_mixing_fail_like_cupy(cp) -> None:
    dev = cp.arange(4, dtype=cp.float64)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(dev)
    with pytest.raises(TypeError, match="Unsupported type"):
        _ = dev + np.ones(4)
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.where(dev > 1, np.ones(4), dev)
    assert float((dev + np.float32(1.0)).sum()) == 10.0  # NumPy and Python scalars are fine


def test_numpy_functions_dispatch_and_reductions_stay_on_the_device(cp) -> None:
    dev = cp.asarray(np.array([[3.0, np.nan], [1.0, 2.0]]))
    total = cp.nansum(dev)
    assert isinstance(total, cp.ndarray) and total.shape == () and float(total) == 6.0
    srt = np.sort(dev, axis=1)  # __array_function__ -> the stand-in, as with CuPy
    assert isinstance(srt, cp.ndarray)
    np.testing.assert_array_equal(srt.get(), [[3.0, np.nan], [1.0, 2.0]])
    assert isinstance(np.isfinite(dev), cp.ndarray)
    view = dev[1]
    view[0] = 7.0  # views share device memory
    assert dev.get()[1, 0] == 7.0


def test_empty_memory_is_poisoned(cp) -> None:
    out = cp.empty((2, 2), dtype=cp.float32)
    assert np.all(out.get() == np.frombuffer(b"\x7f" * 4, "<f4")[0])
    assert np.all(cp.empty(3, dtype=cp.int32).get() == 0x7F7F7F7F)


def test_devices_streams_and_pools_have_cupy_signatures(cp) -> None:
    assert cp.cuda.runtime.getDeviceCount() == 1 and cp.cuda.is_available()
    free, total = cp.cuda.runtime.memGetInfo()
    assert free <= total and cp.cuda.runtime.getDeviceProperties(0)["totalGlobalMem"] == total
    with cp.cuda.Device(0) as device:
        assert cp.cuda.runtime.getDevice() == 0 and device.id == 0
        device.synchronize()
    with pytest.raises(cp.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cp.cuda.Device(1)
    with cp.cuda.Stream(non_blocking=True) as stream:
        assert cp.cuda.get_current_stream() is stream
        stream.synchronize()
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    pool.set_limit(fraction=0.5)
    assert pool.get_limit() == total // 2 and pool.used_bytes() == 0
    assert issubclass(cp.cuda.memory.OutOfMemoryError, MemoryError)


def test_installed_only_for_the_test(cp) -> None:
    assert sys.modules["cupy"] is cp
    from cupyx.scipy.ndimage import gaussian_filter  # noqa: PLC0415
    from scipy import ndimage  # noqa: PLC0415

    image = np.random.default_rng(0).normal(size=(9, 11))
    np.testing.assert_array_equal(gaussian_filter(cp.asarray(image), 1.5).get(), ndimage.gaussian_filter(image, 1.5))


def test_not_installed_outside_emulated_tests() -> None:
    cupy = sys.modules.get("cupy")
    assert cupy is None or "stand-in" not in (cupy.__doc__ or "")

"""Fixtures of the emulator's own tests: the CuPy stand-in installed for one test."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import gpu_available


@pytest.fixture
def cp() -> Iterator[ModuleType]:
    """The CuPy stand-in, in ``sys.modules`` as ``cupy`` for this test.

    Skipped where a real CUDA device is present (the gpu tests run on it; the stand-in is not
    mixed with the real CuPy in one process, whose kernels ``gpu_kernels`` memoises) and where
    g++ is missing.
    """
    if gpu_available():
        pytest.skip("a CUDA device is present: gpu tests run on it, not on the emulator")
    if shutil.which("g++") is None:
        pytest.skip("no g++ for the CPU emulator of CUDA (apt-get install g++)")
    from tests.gpu_emulation.install import emulated_cupy  # noqa: PLC0415

    with emulated_cupy() as module:
        yield module

"""Shared pytest configuration.

Kept free of FastAPI/astropy imports at module level: the GPU machine runs the
``gpu``-marked parity tests with NumPy, CuPy and pytest only.

GPU policy: tests marked ``gpu`` are skipped when no CUDA device is present,
unless the run asks for a GPU (``--require-gpu``, or a ``-m`` expression that
selects ``gpu`` without negating it); then a missing GPU is a failure, so a GPU
run can never pass by skipping.
"""

from __future__ import annotations

import functools

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-gpu",
        action="store_true",
        default=False,
        help="fail (instead of skip) gpu-marked tests when no CUDA device is available",
    )


@functools.cache
def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return bool(cupy.cuda.is_available()) and cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _gpu_requested(config: pytest.Config) -> bool:
    if config.getoption("--require-gpu"):
        return True
    expr = (config.getoption("-m") or "").replace(" ", "")
    return "gpu" in expr and "notgpu" not in expr


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    required = _gpu_requested(config)
    for item in items:
        if "gpu" not in item.keywords:
            continue
        if required:
            item.add_marker(pytest.mark.usefixtures("_fail_without_gpu"))
        else:
            item.add_marker(pytest.mark.skip(reason="no CUDA device (use --require-gpu to fail instead)"))


@pytest.fixture
def _fail_without_gpu() -> None:
    pytest.fail("GPU tests were requested but no CUDA device/CuPy is available", pytrace=False)

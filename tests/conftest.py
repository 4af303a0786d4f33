"""Shared pytest configuration.

Kept free of FastAPI/astropy imports at module level: the GPU machine runs the
``gpu``-marked parity tests with NumPy, CuPy and pytest only.

GPU policy for tests marked ``gpu``:

- a CUDA device answers through CuPy: they run on it;
- no device, and the run asks for a GPU (``--require-gpu``, or a ``-m`` expression that
  selects ``gpu`` without negating it): they fail, so a GPU run can never pass by skipping
  or by emulation;
- no device otherwise: they run on the CPU emulator of CUDA (:mod:`tests.gpu_emulation`: a
  NumPy-backed CuPy stand-in put in ``sys.modules`` for each such test, and the kernels' CUDA
  C compiled as C++ with sanitizers); they skip only when the emulator's C++ compiler is
  missing or ``--no-gpu-emulation`` is given.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-gpu",
        action="store_true",
        default=False,
        help="fail (instead of emulate/skip) gpu-marked tests when no CUDA device is available",
    )
    parser.addoption(
        "--no-gpu-emulation",
        action="store_true",
        default=False,
        help="skip gpu-marked tests without a CUDA device instead of running them on the CPU emulator",
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


def _emulator_problem(config: pytest.Config) -> str | None:
    """Why gpu tests cannot run on the CPU emulator here (None when they can)."""
    if config.getoption("--no-gpu-emulation"):
        return "no CUDA device and --no-gpu-emulation given"
    import shutil  # noqa: PLC0415

    if shutil.which("g++") is None:
        return "no CUDA device, and no g++ for the CPU emulator of CUDA (apt-get install g++)"
    return None


def pytest_report_header(config: pytest.Config) -> str:
    if gpu_available():
        return "gpu-marked tests: on the CUDA device (CuPy)"
    if _gpu_requested(config):
        return "gpu-marked tests: GPU required but no CUDA device -> they fail"
    problem = _emulator_problem(config)
    return f"gpu-marked tests: skipped ({problem})" if problem else "gpu-marked tests: CPU emulator of CUDA"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    required = _gpu_requested(config)
    problem = None if required else _emulator_problem(config)
    for item in items:
        if "gpu" not in item.keywords:
            continue
        if required:
            item.stash[_GPU_MODE] = "fail"
        elif problem:
            item.add_marker(pytest.mark.skip(reason=f"{problem} (use --require-gpu to fail instead)"))
        else:
            item.stash[_GPU_MODE] = "emulated"
            item.user_properties.append(("gpu", "emulated"))


_GPU_MODE = pytest.StashKey[str]()


@pytest.fixture(autouse=True)
def _gpu_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    """Per-test GPU mode set at collection: fail (GPU required, none present), or the CuPy
    stand-in in ``sys.modules`` for this test only (see :mod:`tests.gpu_emulation`)."""
    mode = request.node.stash.get(_GPU_MODE, None)
    if mode == "fail":
        pytest.fail("GPU tests were requested but no CUDA device/CuPy is available", pytrace=False)
    if mode != "emulated":
        yield
        return
    from tests.gpu_emulation.install import emulated_cupy  # noqa: PLC0415

    with emulated_cupy():
        yield


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    counts: dict[str, int] = {}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if ("gpu", "emulated") in getattr(report, "user_properties", []) and report.when == "call":
                counts[outcome] = counts.get(outcome, 0) + 1
    if counts:
        summary = ", ".join(f"{n} {k}" for k, n in counts.items())
        terminalreporter.write_line(f"gpu-marked tests on the CPU emulator of CUDA: {summary}")

"""The kernel contract: both trees expose the same public functions with identical signatures,
``gpu_kernels`` imports without CUDA, and the capability table points at real modules."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from app.compute.contract import KERNEL_MODULES, PARITY_TOLERANCE


def _public(module) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(obj)
        for name, obj in vars(module).items()
        if inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == module.__name__
    }


@pytest.mark.parametrize("name", KERNEL_MODULES)
def test_same_names_and_signatures(name: str) -> None:
    cpu = _public(importlib.import_module(f"cpu_fallback.{name}"))
    gpu = _public(importlib.import_module(f"gpu_kernels.{name}"))
    assert cpu, f"cpu_fallback.{name} has no public functions"
    assert set(cpu) == set(gpu)
    for fn in cpu:
        assert str(cpu[fn]) == str(gpu[fn]), fn


def test_gpu_kernels_import_without_cupy() -> None:
    code = (
        "import sys; sys.modules['cupy'] = None; sys.modules['cupyx'] = None\n"
        "import importlib\n"
        f"for m in {list(KERNEL_MODULES)!r}: importlib.import_module('gpu_kernels.' + m)\n"
        "import cpu_fallback, app.compute.backend\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cpu_fallback_never_imports_cupy() -> None:
    code = (
        "import sys, importlib\n"
        f"for m in {list(KERNEL_MODULES)!r}: importlib.import_module('cpu_fallback.' + m)\n"
        "print('cupy' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_capabilities_point_at_contract_modules() -> None:
    from app.operations.registry import capability_table

    for op, cap in capability_table().items():
        assert set(cap.kernels) <= set(KERNEL_MODULES), op
        assert cap.tier in ("interactive", "heavy")
        if cap.gpu_kernel:
            assert all(module in PARITY_TOLERANCE for module in cap.kernels), op

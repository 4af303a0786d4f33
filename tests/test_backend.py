"""Backend selection, the capability table and the resident-cube LRU (CPU-only tests)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from app.compute.backend import Backend, select_backend
from app.compute.residency import ResidentCubes
from app.compute.selftest import compare, tiny_cube
from tests.conftest import gpu_available

pytestmark = pytest.mark.skipif(gpu_available(), reason="checks the no-GPU behaviour")


def test_gpu_backend_refuses_to_start_without_a_gpu() -> None:
    with pytest.raises(RuntimeError, match="GPU backend unavailable"):
        select_backend("gpu")


def test_auto_falls_back_to_cpu_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="visivo.compute"):
        backend = select_backend("auto")
    assert backend.name == "cpu" and "GPU backend unavailable" in backend.reason
    assert any("falling back to the CPU" in r.message for r in caplog.records)


def test_cpu_backend_uses_reference_kernels() -> None:
    from app.compute.dispatch import JobContext
    from app.operations import registry

    moment, preview = registry.get("moment").capability, registry.get("preview").capability
    backend = Backend("cpu")
    ctx = JobContext(backend, None, 1 << 20, capability=moment)
    assert ctx.kernels().__name__ == "cpu_fallback.moments"
    assert ctx.kernels("casa_moments").__name__ == "cpu_fallback.casa_moments"
    with pytest.raises(LookupError, match="not declared"):
        ctx.kernels("pv")  # a module the operation's capability row does not declare
    assert not backend.runs_on_gpu(moment)
    gpu = Backend("gpu")
    assert gpu.runs_on_gpu(moment) and not gpu.runs_on_gpu(preview) and not gpu.runs_on_gpu(None)


def test_selftest_compare_detects_mismatch() -> None:
    cube, _, _ = tiny_cube()
    compare("noise", (cube[0],), (cube[0].copy(),))
    shifted = cube[0].copy()
    shifted[1, 1] += 1.0
    with pytest.raises(AssertionError):
        compare("noise", (cube[0],), (shifted,))
    blanked = cube[0].copy()
    blanked[0, 0] = np.nan
    with pytest.raises(AssertionError, match="NaN positions"):
        compare("noise", (cube[0],), (blanked,))


def test_resident_cubes_lru_within_budget() -> None:
    cache = ResidentCubes(lambda device: 100)
    uploads: list[str] = []

    def upload(name: str):
        def run() -> np.ndarray:
            uploads.append(name)
            return np.zeros(10)
        return run

    assert cache.get_or_upload(0, "a", 40, upload("a")) is not None
    assert cache.get_or_upload(0, "a", 40, upload("a")) is not None  # resident: no second upload
    cache.get_or_upload(0, "b", 40, upload("b"))
    cache.get_or_upload(0, "c", 40, upload("c"))  # evicts "a" (least recently used)
    assert uploads == ["a", "b", "c"]
    assert cache.get(0, "a") is None and cache.get(0, "b") is not None
    assert cache.get_or_upload(0, "huge", 101, upload("huge")) is None  # streams instead
    assert "huge" not in uploads
    assert cache.report()[0]["bytes"] <= 100
    cache.evict_prefix("b")
    assert cache.get(0, "b") is None

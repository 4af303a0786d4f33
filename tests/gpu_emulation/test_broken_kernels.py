"""A deliberately broken kernel makes the gpu tests fail: a wrong stride fails a parity test,
an off-by-one loop bound trips AddressSanitizer, and the start-up self-test rejects the GPU.

The breakage is applied to the kernel source text at compile time (:func:`executor.mutated`),
so the real ``gpu_kernels`` functions and the real parity tests in ``tests/gpu`` run unchanged.
Each test first checks that its mutation hit the kernel text (if a kernel is rewritten, update
the text here).
"""

from __future__ import annotations

import logging

import pytest

from app.compute.backend import select_backend
from tests.gpu import test_moments_parity, test_views_pv_noise_parity
from tests.gpu_emulation import executor

PV_ROW = "plane[(long long)ry * nx + (long long)rx]"
MOMENTS_LOOP = "for (int c = 0; c < nz; ++c) {"


def test_parity_tests_pass_on_the_intact_kernels(cp) -> None:
    test_views_pv_noise_parity.test_pv_box_sample_parity(3)
    test_moments_parity.test_moment_maps_parity("random", None)


def test_wrong_stride_fails_the_pv_parity_test(cp) -> None:
    # rows indexed with ny (33) instead of nx (47): in bounds, wrong pixels
    with (executor.mutated(PV_ROW, "plane[(long long)ry * ny + (long long)rx]") as hits,
          pytest.raises(AssertionError, match="Mismatched elements")):
        test_views_pv_noise_parity.test_pv_box_sample_parity(3)
    assert hits[0] > 0, "the pv kernel text changed: update PV_ROW"


def test_off_by_one_trips_the_sanitizer_in_the_moments_parity_test(cp) -> None:
    with (executor.mutated(MOMENTS_LOOP, "for (int c = 0; c <= nz; ++c) {") as hits,
          pytest.raises(executor.KernelFault, match="heap-buffer-overflow") as info):
        test_moments_parity.test_moment_maps_parity("random", None)
    assert hits[0] > 0, "the moments kernel text changed: update MOMENTS_LOOP"
    assert "visivo_moments" in str(info.value)


def test_startup_selftest_accepts_the_emulated_gpu(cp) -> None:
    backend = select_backend("gpu")
    assert backend.is_gpu and backend.reason == "CUDA devices found and kernels self-tested"
    assert [d.name for d in backend.devices] == ["CPU emulator of CUDA (tests/gpu_emulation)"]
    from app.compute.dispatch import JobContext
    from app.operations import registry

    ctx = JobContext(backend, 0, 1 << 20, capability=registry.get("moment").capability)
    assert backend.runs_on_gpu(ctx.capability) and ctx.kernels().__name__ == "gpu_kernels.moments"


def test_startup_selftest_rejects_a_broken_kernel(cp, caplog: pytest.LogCaptureFixture) -> None:
    with executor.mutated(PV_ROW, "plane[(long long)ry * ny + (long long)rx]") as hits:
        with pytest.raises(RuntimeError, match="GPU backend unavailable: AssertionError"):
            select_backend("gpu")
        with caplog.at_level(logging.WARNING, logger="visivo.compute"):
            fallback = select_backend("auto")
    assert hits[0] > 0
    assert fallback.name == "cpu" and "pv" in fallback.reason
    assert any("falling back to the CPU" in r.message for r in caplog.records)

"""The GPU benchmark of ``bench/gpu_run.sh`` run on the emulated device (timer stubbed), so the
hardware run cannot die on a code path no machine without a GPU has executed; and the
device-peak bandwidth formula against published figures."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from bench import bench_cube_products as bench
from bench.common import SYNTHETIC_AXIS, peak_bandwidth, synthetic_cube

H100_SXM = {"memoryClockRate": 2_619_000, "memoryBusWidth": 5120}  # kHz, bits (deviceQuery)


def test_peak_bandwidth_formula() -> None:
    assert peak_bandwidth(H100_SXM) == pytest.approx(3.352e12, rel=1e-3)  # NVIDIA: 3.35 TB/s
    assert peak_bandwidth({"memoryClockRate": 1_215_000, "memoryBusWidth": 4096}) == pytest.approx(
        2 * 1.215e9 * 512)  # A100 40 GB: 1.555 TB/s
    assert peak_bandwidth({"memoryBusWidth": 5120}) is None and peak_bandwidth({}) is None


def test_gpu_case_reports_fractions_of_measured_and_peak_bandwidth(cp, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_benchmark(fn, args=(), kwargs=None, n_repeat=1, n_warmup=0):
        fn(*args, **(kwargs or {}))  # really runs (the moment kernels on the emulator)
        calls.append(getattr(fn, "__name__", "?"))
        return SimpleNamespace(gpu_times=np.array([[2e-3, 1e-3]]))  # device time: the one thing not emulated

    monkeypatch.setattr(sys.modules["cupyx.profiler"], "benchmark", fake_benchmark)
    props = dict(cp.cuda.runtime.getDeviceProperties(0), **H100_SXM)
    monkeypatch.setattr(cp.cuda.runtime, "getDeviceProperties", lambda device: props)
    nz = 16
    case = bench.Case("tiny", "tiny", synthetic_cube((nz, 12, 10)), SYNTHETIC_AXIS.coords_km_s(nz),
                      SYNTHETIC_AXIS.widths_km_s(nz))
    out = bench.gpu_case(case, 1)
    nbytes = case.cube.nbytes
    assert out["sum_bw"] == pytest.approx(nbytes / 1e-3) and out["copy_bw"] == pytest.approx(2 * nbytes / 1e-3)
    assert out["measured_bw"] == out["copy_bw"] and out["peak_bw"] == pytest.approx(3.352e12, rel=1e-3)
    for orders in bench.ORDER_SETS:
        k = bench.label(orders)
        assert out["moments_fraction"][k] == pytest.approx(0.5)
        assert out["moments_peak_fraction"][k] == pytest.approx(nbytes / 1e-3 / out["peak_bw"])
    assert calls.count("moment_maps") == len(bench.ORDER_SETS)
    targets = bench.evaluate_targets({"tiny": {"gpu": out}}, gpu=True)
    assert targets[-1]["measured"].startswith("lowest 50%")

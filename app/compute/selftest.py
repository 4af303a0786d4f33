"""GPU start-up self-test: JIT-warm every GPU kernel and compare it with the CPU reference.

Run by :func:`app.compute.backend.select_backend` on each device before the GPU backend is
accepted. A tiny deterministic cube with NaNs exercises every kernel module of the contract;
any mismatch beyond the module's parity tolerance (or any exception) rejects the GPU.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from app.compute.contract import KERNEL_MODULES, PARITY_TOLERANCE


def tiny_cube(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (24, 9, 11) float32 cube with a Gaussian line, noise and NaNs, plus coords/widths (km/s)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = 24, 9, 11
    v = np.linspace(-60.0, 55.0, nz)
    centre = rng.uniform(-20, 20, (ny, nx))
    line = np.exp(-0.5 * ((v[:, None, None] - centre[None]) / 12.0) ** 2)
    cube = (line + rng.normal(0, 0.05, (nz, ny, nx))).astype(np.float32)
    cube[3, 2, 4] = np.nan
    cube[:, 5, 5] = np.nan
    return cube, v, np.full(nz, abs(v[1] - v[0]))


def _cases(cube: np.ndarray, v: np.ndarray, w: np.ndarray) -> dict[str, list[tuple[str, tuple, dict]]]:
    ns = 6
    sx, sy = np.linspace(1.0, 9.0, ns), np.linspace(2.0, 6.5, ns)
    nx_, ny_ = np.full(ns, -0.49), np.full(ns, 0.87)
    return {
        "cube_views": [("finite_range", (cube,), {}), ("strided_preview", (cube,), {"step": 2})],
        "noise": [("channel_mad", (cube,), {})],
        "pv": [("pv_box_sample", (cube, sx, sy, nx_, ny_), {"width_pixels": 3})],
        "moments": [("moment_maps", (cube, v, w), {"orders": (0, 1, 2, 3, 4, 5, 6, 8, 10), "threshold": 0.1})],
        "casa_moments": [("casa_moment_maps", (cube, v, w), {"moments": (-1, 0, 1, 2, 5, 6, 7, 8, 9, 10, 11)})],
        "stats": [("region_stats", (cube,), {})],
        "region_flux": [("channel_sums", (cube,), {})],
    }


def selftest_modules() -> set[str]:
    """Kernel modules the start-up self-test exercises."""
    return set(_cases(*tiny_cube()))


def _flatten(result: Any) -> list[np.ndarray]:
    if isinstance(result, dict):
        return [x for k in sorted(result) for x in _flatten(result[k])]
    if isinstance(result, (tuple, list)):
        return [x for item in result for x in _flatten(item)]
    if hasattr(result, "get") and not isinstance(result, np.ndarray):
        result = result.get()  # sync
    return [np.asarray(result, dtype=np.float64)]


def compare(module: str, cpu_result: Any, gpu_result: Any) -> None:
    """Raise AssertionError if results differ in NaN positions or beyond the module's tolerance."""
    tol = PARITY_TOLERANCE[module]
    for a, b in zip(_flatten(cpu_result), _flatten(gpu_result), strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{module}: NaN positions differ")
        np.testing.assert_allclose(b, a, rtol=tol.rtol, atol=tol.atol, equal_nan=True, err_msg=module)


def run_gpu_selftest(devices: list[Any], to_device: Callable[[Any], Any] | None = None) -> None:
    """Run every case on every device; raises on the first failure."""
    import cupy  # noqa: PLC0415

    cube, v, w = tiny_cube()
    for device in devices:
        with cupy.cuda.Device(device.index):
            for module, cases in _cases(cube, v, w).items():
                if module not in KERNEL_MODULES:
                    continue
                cpu = importlib.import_module(f"cpu_fallback.{module}")
                gpu = importlib.import_module(f"gpu_kernels.{module}")
                for name, args, kwargs in cases:
                    dev_args = tuple(cupy.asarray(a) if isinstance(a, np.ndarray) and a.ndim == 3 else a for a in args)
                    compare(module, getattr(cpu, name)(*args, **kwargs), getattr(gpu, name)(*dev_args, **kwargs))

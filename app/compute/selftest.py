"""GPU start-up self-test: JIT-warm every GPU kernel and compare it with the CPU reference.

Run by :func:`app.compute.backend.select_backend` on each device before the GPU backend is
accepted. A tiny deterministic cube with NaNs exercises every kernel module of the contract
(``KERNEL_MODULES``; ``tests/test_selftest_coverage.py`` fails when one lacks a case); any
mismatch beyond the module's parity tolerance (or any exception) rejects the GPU.

A case is one call of a public kernel function with the same arguments in both trees. Arrays
of two or more dimensions (and lists of them) go to the device; 1-D axis arrays stay on the
host, as the services pass them. A case may name a ``view`` that maps a result (on the host)
to what must agree: the isosurface compares its sorted vertices (triangulations of ambiguous
cells may differ), imfit its parameters, errors, chi^2 and convergence flags, the others
their values.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.compute.contract import KERNEL_MODULES, PARITY_TOLERANCE


@dataclass(frozen=True)
class Case:
    """One self-test call: ``module.function(*args, **kwargs)`` in both trees."""

    function: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    view: Callable[[Any], Any] | None = None


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


def _plane(ny: int = 24, nx: int = 44) -> np.ndarray:
    """A float32 plane with two elliptical Gaussians on a weak ramp, and a blank corner."""
    y, x = np.mgrid[:ny, :nx].astype(np.float64)
    g1 = 2.0 * np.exp(-0.5 * (((x - 9.3) / 2.1) ** 2 + ((y - 10.6) / 3.2) ** 2))
    g2 = 0.8 * np.exp(-0.5 * (((x - 34.2) / 1.7) ** 2 + ((y - 15.1) / 1.9) ** 2))
    plane = (g1 + g2 + 0.01 * x / nx).astype(np.float32)
    plane[:3, :3] = np.nan
    return plane


def _sorted_vertices(result: Any) -> np.ndarray:
    verts = np.asarray(result[0], dtype=np.float64)
    return verts[np.lexsort(verts.T[::-1])] if verts.size else verts


def _fit_result(result: Any) -> dict:
    """What must agree between two imfit runs (the iteration count may differ at the tolerance)."""
    return {key: result[key] for key in ("params", "errors", "chi2", "converged")}


def selftest_cases(cube: np.ndarray, v: np.ndarray, w: np.ndarray) -> dict[str, list[Case]]:
    """The self-test cases of every kernel module, on the cube of :func:`tiny_cube`."""
    ns = 6
    sx, sy = np.linspace(1.0, 9.0, ns), np.linspace(2.0, 6.5, ns)
    nx_, ny_ = np.full(ns, -0.49), np.full(ns, 0.87)
    spectra = np.nanmean(cube, axis=2).T.astype(np.float64)  # (9, 24): one spectrum per row
    spectra[2, 5] = np.nan
    plane = _plane()
    p0 = np.array([2.0, 9.0, 10.0, 2.0, 3.0, 0.1, 0.8, 34.0, 15.0, 1.5, 2.0, 0.0])
    line_free = np.r_[0:5, 19:24]
    smooth = np.nan_to_num(cube, nan=0.0).mean(axis=0, dtype=np.float64)
    return {
        "cube_views": [Case("finite_range", (cube,)), Case("strided_preview", (cube,), {"step": 2})],
        "noise": [Case("channel_mad", (cube,))],
        "pv": [Case("pv_box_sample", (cube, sx, sy, nx_, ny_), {"width_pixels": 3})],
        "moments": [Case("moment_maps", (cube, v, w), {"orders": (0, 1, 2, 3, 4, 5, 6, 8, 10), "threshold": 0.1})],
        "casa_moments": [Case("casa_moment_maps", (cube, v, w), {"moments": (-1, 0, 1, 2, 5, 6, 7, 8, 9, 10, 11)})],
        "moment_errors": [
            Case("moment_sigma_maps", (cube, v, w, np.linspace(0.01, 0.03, cube.shape[0])), {"threshold": 0.1}),
            Case("moment_sigma_maps", (cube, v, w, 0.02), {"include": (0.05, 10.0), "dispersion": True}),
        ],
        "stats": [Case("region_stats", (cube,))],
        "region_flux": [Case("channel_sums", (cube,))],
        "linewidth": [
            Case("gaussian_linewidth", (cube, v, w), {"snr_cut": 3.0}),
            Case("equivalent_width", (cube, w), {"snr_cut": 3.0, "threshold": 0.1}),
        ],
        "baseline": [
            Case("subtract_baseline", (cube, line_free), {"order": 1}),
            Case("fit_baseline", (cube, line_free), {"order": 2}),
            Case("subtract_baseline", (cube, line_free), {"method": "median"}),
        ],
        "stacking": [
            Case("mean_spectrum_partial", (cube,)),
            Case("combine_spectra", (spectra,), {"method": "median"}),
            Case("stack_weights", (spectra, np.nanmax(spectra, axis=1)), {"weight_by": "rms"}),
            Case("stack_cubes", ([cube, cube[::-1].copy()],), {"method": "mean"}),
        ],
        "isosurface": [Case("isosurface_mesh", (np.nan_to_num(cube, nan=0.0),), {"level": 0.5}, _sorted_vertices)],
        "fit2d": [
            Case("estimate_gaussians", (plane,), {"n_components": 2}),
            Case("fit_gaussians", (plane[None],), {"p0": p0, "n_components": 2, "max_iter": 50}, _fit_result),
        ],
        "contours": [
            Case("smooth_image", (plane,), {"sigma": 1.5}),
            Case("contour_levels", (smooth,), {"n_levels": 4}),
            Case("trace_contours", (smooth,), {"levels": [0.3, 0.6]}),
        ],
    }


def selftest_modules() -> set[str]:
    """Kernel modules the start-up self-test exercises."""
    return set(selftest_cases(*tiny_cube()))


def _flatten(result: Any) -> list[np.ndarray]:
    if isinstance(result, dict):
        return [x for k in sorted(result) for x in _flatten(result[k])]
    if isinstance(result, (tuple, list)):
        return [x for item in result for x in _flatten(item)]
    if hasattr(result, "get") and not isinstance(result, np.ndarray):
        result = result.get()  # sync
    return [np.asarray(result, dtype=np.float64)]


def _host(result: Any) -> Any:
    """``result`` with every device array copied to the host (same nesting)."""
    if isinstance(result, dict):
        return {k: _host(x) for k, x in result.items()}
    if isinstance(result, (tuple, list)):
        return type(result)(_host(x) for x in result)
    if hasattr(result, "get") and not isinstance(result, np.ndarray):
        return result.get()  # sync
    return result


def compare(module: str, cpu_result: Any, gpu_result: Any) -> None:
    """Raise AssertionError if results differ in NaN positions or beyond the module's tolerance."""
    tol = PARITY_TOLERANCE[module]
    for a, b in zip(_flatten(cpu_result), _flatten(gpu_result), strict=True):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{module}: NaN positions differ")
        np.testing.assert_allclose(b, a, rtol=tol.rtol, atol=tol.atol, equal_nan=True, err_msg=module)


def run_case(module: str, case: Case, reference: Any, candidate: Any, to_device: Callable[[Any], Any]) -> None:
    """Run ``case`` on the ``reference`` and ``candidate`` kernel modules and :func:`compare` them.

    ``to_device`` moves an argument array of 2+ dimensions to the candidate's device (identity
    for a CPU-vs-CPU run); lists of such arrays are moved element by element.
    """

    def move(a: Any) -> Any:
        if isinstance(a, np.ndarray) and a.ndim >= 2:
            return to_device(a)
        if isinstance(a, list) and a and all(isinstance(x, np.ndarray) for x in a):
            return [move(x) for x in a]
        return a

    ref = getattr(reference, case.function)(*case.args, **case.kwargs)
    got = getattr(candidate, case.function)(*(move(a) for a in case.args), **case.kwargs)
    if case.view is not None:
        ref, got = case.view(_host(ref)), case.view(_host(got))
    compare(module, ref, got)


def run_cpu_selftest() -> None:
    """Every case on the CPU tree against itself: the cases are valid calls (used by the tests)."""
    cube, v, w = tiny_cube()
    for module, cases in selftest_cases(cube, v, w).items():
        cpu = importlib.import_module(f"cpu_fallback.{module}")
        for case in cases:
            run_case(module, case, cpu, cpu, lambda a: a.copy())


def run_gpu_selftest(devices: list[Any], to_device: Callable[[Any], Any] | None = None) -> None:
    """Run every case on every device; raises on the first failure."""
    import cupy  # noqa: PLC0415

    move = to_device or cupy.asarray
    cube, v, w = tiny_cube()
    for device in devices:
        with cupy.cuda.Device(device.index):
            for module, cases in selftest_cases(cube, v, w).items():
                if module not in KERNEL_MODULES:
                    continue
                cpu = importlib.import_module(f"cpu_fallback.{module}")
                gpu = importlib.import_module(f"gpu_kernels.{module}")
                for case in cases:
                    run_case(module, case, cpu, gpu, move)

"""GPU start-up self-test: JIT-warm every GPU kernel and compare it with the CPU reference.

Run by :func:`app.compute.backend.select_backend` on each device before the GPU backend is
accepted. A tiny deterministic cube with NaNs exercises every kernel module of the contract
(``KERNEL_MODULES``; each declares its calls as ``SELFTEST`` in ``gpu_kernels/<module>.py``, and
``tests/test_selftest_coverage.py`` fails when one declares none); any
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
from typing import Any

import numpy as np

from app.compute.contract import KERNEL_MODULES, PARITY_TOLERANCE, Case, selftest_calls


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


def selftest_inputs(cube: np.ndarray, v: np.ndarray, w: np.ndarray) -> dict[str, Any]:
    """The named arrays self-test cases (``Case.args``) draw from, built from :func:`tiny_cube`."""
    ns = 6
    spectra = np.nanmean(cube, axis=2).T.astype(np.float64)  # (9, 24): one spectrum per row
    spectra[2, 5] = np.nan
    plane = _plane()
    return {
        "cube": cube, "v": v, "w": w,
        "path_x": np.linspace(1.0, 9.0, ns), "path_y": np.linspace(2.0, 6.5, ns),
        "normal_x": np.full(ns, -0.49), "normal_y": np.full(ns, 0.87),
        "spectra": spectra, "spectra_peaks": np.nanmax(spectra, axis=1),
        "line_free": np.r_[0:5, 19:24],
        "filled_cube": np.nan_to_num(cube, nan=0.0), "cube_pair": [cube, cube[::-1].copy()],
        "plane": plane, "planes": plane[None],
        "mean_plane": np.nan_to_num(cube, nan=0.0).mean(axis=0, dtype=np.float64),
        "channel_noise": np.linspace(0.01, 0.03, cube.shape[0]), "noise": 0.02,
    }


#: Projections of results that must agree, by the name a case gives (``Case.view``).
VIEWS: dict[str, Callable[[Any], Any]] = {"sorted_vertices": _sorted_vertices, "fit_result": _fit_result}


def selftest_cases(cube: np.ndarray, v: np.ndarray, w: np.ndarray) -> dict[str, list[Case]]:
    """Every kernel module's declared self-test calls (``gpu_kernels.<module>.SELFTEST``)."""
    return {module: list(selftest_calls(module)) for module in KERNEL_MODULES if selftest_calls(module)}


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


def run_case(module: str, case: Case, reference: Any, candidate: Any, to_device: Callable[[Any], Any],
             inputs: dict[str, Any] | None = None) -> None:
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

    named = inputs if inputs is not None else selftest_inputs(*tiny_cube())
    args = [named[name] for name in case.args]
    ref = getattr(reference, case.function)(*args, **case.kwargs)
    got = getattr(candidate, case.function)(*(move(a) for a in args), **case.kwargs)
    if case.view is not None:
        view = VIEWS[case.view]
        ref, got = view(_host(ref)), view(_host(got))
    compare(module, ref, got)


def run_cpu_selftest() -> None:
    """Every case on the CPU tree against itself: the cases are valid calls (used by the tests)."""
    cube, v, w = tiny_cube()
    inputs = selftest_inputs(cube, v, w)
    for module, cases in selftest_cases(cube, v, w).items():
        cpu = importlib.import_module(f"cpu_fallback.{module}")
        for case in cases:
            run_case(module, case, cpu, cpu, lambda a: a.copy(), inputs)


def run_gpu_selftest(devices: list[Any], to_device: Callable[[Any], Any] | None = None) -> None:
    """Run every case on every device; raises on the first failure."""
    import cupy  # noqa: PLC0415

    move = to_device or cupy.asarray
    cube, v, w = tiny_cube()
    inputs = selftest_inputs(cube, v, w)
    for device in devices:
        with cupy.cuda.Device(device.index):
            for module, cases in selftest_cases(cube, v, w).items():
                if module not in KERNEL_MODULES:
                    continue
                cpu = importlib.import_module(f"cpu_fallback.{module}")
                gpu = importlib.import_module(f"gpu_kernels.{module}")
                for case in cases:
                    run_case(module, case, cpu, gpu, move, inputs)

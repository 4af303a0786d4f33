"""The GPU start-up self-test covers every kernel module, and its cases are valid calls."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from app.compute import selftest
from app.compute.contract import KERNEL_MODULES
from app.compute.selftest import compare, run_case, selftest_cases, selftest_inputs, tiny_cube
from cpu_fallback import cube_views, noise, region_flux


@pytest.fixture(scope="module")
def cases() -> dict:
    return selftest_cases(*tiny_cube())


@pytest.mark.parametrize("module", KERNEL_MODULES)
def test_every_kernel_module_has_a_selftest_case(module: str, cases: dict) -> None:
    assert cases.get(module), f"kernel module {module!r} has no self-test case in app/compute/selftest.py"


def test_cases_name_only_contract_modules_and_public_functions(cases: dict) -> None:
    assert set(cases) <= set(KERNEL_MODULES)
    for module, items in cases.items():
        for tree in ("cpu_fallback", "gpu_kernels"):
            mod = importlib.import_module(f"{tree}.{module}")
            for case in items:
                fn = getattr(mod, case.function, None)
                assert inspect.isfunction(fn) and not case.function.startswith("_"), (tree, module, case.function)
                inspect.signature(fn).bind(*case.args, **case.kwargs)  # a valid call


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_cases_run_and_pass_cpu_vs_cpu() -> None:
    selftest.run_cpu_selftest()


def test_cases_agree_with_known_values(cases: dict) -> None:
    cube, v, w = tiny_cube()
    inputs = selftest_inputs(cube, v, w)

    def args(module: str) -> list:
        return [inputs[name] for name in cases[module][0].args]

    finite = cube[np.isfinite(cube)]
    assert cube_views.finite_range(*args("cube_views")) == (float(finite.min()), float(finite.max()))
    flux = region_flux.channel_sums(*args("region_flux"))
    np.testing.assert_allclose(np.asarray(flux[0], dtype=np.float64), np.nansum(cube, axis=(1, 2), dtype=np.float64),
                               rtol=1e-12)
    med, mad = noise.channel_mad(*args("noise"))
    for z in (0, 3, 23):
        plane = cube[z][np.isfinite(cube[z])].astype(np.float64)
        assert med[z] == np.median(plane) and mad[z] == np.median(np.abs(plane - np.median(plane)))


def test_a_wrong_candidate_fails_the_case() -> None:
    cube, v, w = tiny_cube()
    case = selftest_cases(cube, v, w)["noise"][0]

    class Broken:
        @staticmethod
        def channel_mad(c, **kw):
            med, mad = noise.channel_mad(c, **kw)
            return med, mad * 1.001

    with pytest.raises(AssertionError):
        run_case("noise", case, noise, Broken, lambda a: a)
    compare("noise", noise.channel_mad(cube), noise.channel_mad(cube.copy()))

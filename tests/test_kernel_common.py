"""kernel_common: shared kernel helpers, imported by both trees; no private import across them."""

from __future__ import annotations

import ast
import math
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from kernel_common.constants import FWHM_PER_SIGMA, MAD_TO_SIGMA
from kernel_common.linalg import cholesky_solve
from kernel_common.robust import row_median, row_median_mad
from kernel_common.views import finite_range

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _imports(path: pathlib.Path) -> list[tuple[str, str]]:
    """``(module, name)`` for every ``from module import name`` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, "") for alias in node.names]
    return out


@pytest.mark.parametrize(("tree", "other"), [("cpu_fallback", "gpu_kernels"), ("gpu_kernels", "cpu_fallback")])
def test_no_private_import_across_trees(tree: str, other: str) -> None:
    for path in sorted((ROOT / tree).glob("*.py")):
        for module, name in _imports(path):
            if module == other or module.startswith(other + "."):
                assert not name.startswith("_"), f"{path.name} imports private {module}.{name}"
                assert not module.split(".")[-1].startswith("_"), f"{path.name} imports {module}"


def test_services_do_not_import_kernels_for_finite_range() -> None:
    for path in sorted((ROOT / "app" / "services").rglob("*.py")):
        for module, name in _imports(path):
            assert not (module.startswith("cpu_fallback") and name == "finite_range"), path


def test_kernel_common_imports_only_numpy() -> None:
    code = (
        "import sys\n"
        "for m in ('cupy', 'cupyx', 'astropy', 'fastapi', 'scipy', 'app'): sys.modules[m] = None\n"
        "import importlib, pkgutil, kernel_common\n"
        "for m in pkgutil.iter_modules(kernel_common.__path__): importlib.import_module('kernel_common.' + m.name)\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_constants_formulas() -> None:
    assert pytest.approx(2.0 * math.sqrt(2.0 * math.log(2.0)), rel=1e-15) == FWHM_PER_SIGMA
    assert pytest.approx(2.3548200450309493, rel=1e-15) == FWHM_PER_SIGMA
    # 1 / Phi^-1(3/4), rounded to the contract's 4 decimals
    from statistics import NormalDist

    assert pytest.approx(1.0 / NormalDist().inv_cdf(0.75), abs=5e-5) == MAD_TO_SIGMA


def test_row_median_mad_against_numpy() -> None:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(6, 17))
    v[1, :5] = np.nan
    v[2, 3] = np.inf
    v[4] = np.nan  # an all-blank row
    v[5, 1:] = np.nan  # one value
    med, mad = row_median_mad(v, np)
    for i in range(6):
        x = v[i][np.isfinite(v[i])]
        if x.size == 0:
            assert np.isnan(med[i]) and np.isnan(mad[i])
            continue
        assert med[i] == np.median(x)
        assert mad[i] == np.median(np.abs(x - np.median(x)))
    np.testing.assert_array_equal(row_median(v, np), med)
    _, mad2 = row_median_mad(v, np, min_count=2)
    assert np.isnan(mad2[5]) and mad2[0] == mad[0]


def test_cholesky_solve_against_numpy() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(5, 4, 4))
    g = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(4)
    r = rng.normal(size=(5, 4))
    g[3] = -np.eye(4)  # not positive definite
    x = cholesky_solve(g, r, np)
    for i in (0, 1, 2, 4):
        np.testing.assert_allclose(x[i], np.linalg.solve(g[i], r[i]), rtol=1e-10)
    assert np.isnan(x[3]).all()


def test_finite_range_slabs() -> None:
    cube = np.arange(60, dtype=np.float32).reshape(5, 3, 4)
    cube[0, 0, 0] = np.nan
    cube[4, 2, 3] = -np.inf
    assert finite_range(cube, np, slab_elements=12) == (1.0, 58.0)
    assert finite_range(np.full((2, 2), np.nan)) == (0.0, 0.0)

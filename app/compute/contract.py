"""The neutral kernel contract shared by ``cpu_fallback`` and ``gpu_kernels``.

Kernels import this module and nothing else from :mod:`app`. It holds only plain
data: the dtype policy, the :class:`Tolerance` and :class:`Case` types, and the kernel
modules whose public functions must match between the two trees (checked by
``tests/test_kernel_contract.py``).

Kernel modules describe themselves: every ``gpu_kernels/<module>.py`` declares its parity
tolerance against the CPU reference (``PARITY = Tolerance(...)``) and its start-up self-test
calls (``SELFTEST = (Case(...), ...)``). So a new kernel module is its two files — nothing here
or in :mod:`app.compute.selftest` lists it.

Rules (see the engineering guide):

1. Same public names and ``inspect.signature`` in both trees.
2. Arrays in, arrays out on the tree's own device; array arguments positional,
   options keyword-only; axis order ``(spectral, y, x)``; NaN means blank.
3. Pure: no I/O, no device selection, no globals.
4. float32 stays float32; accumulate in float64 where cancellation bites.
5. Per-spectrum operations keep the spectral axis whole and are tiled over y-slabs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

#: dtype every kernel receives for cube data (native byte order, C-contiguous).
CUBE_DTYPE = "float32"

_TREE = Path(__file__).resolve().parents[2] / "cpu_fallback"

#: Kernel modules that must exist, with identical public signatures, in both trees: every public
#: module of ``cpu_fallback`` (found on disk, so no list to keep).
KERNEL_MODULES: tuple[str, ...] = tuple(sorted(p.stem for p in _TREE.glob("*.py") if not p.stem.startswith("_")))


@dataclass(frozen=True)
class Tolerance:
    """Relative/absolute tolerance for comparing a GPU result with the CPU reference."""

    rtol: float
    atol: float = 0.0


@dataclass(frozen=True)
class Case:
    """One self-test call, ``module.function(*inputs[args], **kwargs)``, made in both trees.

    ``args`` name arrays of the self-test inputs (:func:`app.compute.selftest.selftest_inputs`:
    ``cube``, ``v``, ``w``, ``plane`` ...); ``view`` names a projection of both results that must
    agree (``sorted_vertices``, ``fit_result``), ``None`` to compare the results themselves.
    """

    function: str
    args: tuple[str, ...] = ()
    kwargs: dict = field(default_factory=dict)
    view: str | None = None


def parity_tolerance(module: str) -> Tolerance:
    """``PARITY`` of ``gpu_kernels.<module>`` (the module imports without CUDA)."""
    return importlib.import_module(f"gpu_kernels.{module}").PARITY


def selftest_calls(module: str) -> tuple[Case, ...]:
    """``SELFTEST`` of ``gpu_kernels.<module>``."""
    return importlib.import_module(f"gpu_kernels.{module}").SELFTEST


def __getattr__(name: str) -> dict[str, Tolerance]:
    """``PARITY_TOLERANCE``: ``{module: Tolerance}`` gathered from the GPU kernel modules on first use."""
    if name == "PARITY_TOLERANCE":
        table = {module: parity_tolerance(module) for module in KERNEL_MODULES}
        globals()["PARITY_TOLERANCE"] = table
        return table
    raise AttributeError(name)

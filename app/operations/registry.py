"""The operation registry: every module in :mod:`app.operations.defs` that defines an operation.

Discovery is by module, so adding an operation means adding its module (plus its two kernel
modules and its tests) — no list to edit. The capability table is the registry's rows.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from functools import cache
from typing import Any

from app.compute.capabilities import Capability
from app.operations import defs
from app.operations.base import Operation


@cache
def operations() -> dict[str, type[Operation]]:
    """Every registered operation by name (module order, then definition order)."""
    found: dict[str, type[Operation]] = {}
    for info in sorted(pkgutil.iter_modules(defs.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{defs.__name__}.{info.name}")
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, Operation) and obj is not Operation and obj.__module__ == module.__name__ \
                    and "name" in vars(obj):
                if obj.name in found:
                    raise RuntimeError(f"operation {obj.name!r} is defined twice")
                found[obj.name] = obj
    return found


def get(name: str) -> type[Operation]:
    """One operation by name (``KeyError`` for an unknown one)."""
    return operations()[name]


def capability_table() -> dict[str, Capability]:
    """The capability table: one row per registered operation."""
    return {name: op.capability for name, op in operations().items()}


def capability_report() -> dict[str, dict[str, Any]]:
    """The table as JSON-ready dicts (for ``/v1/health``)."""
    return {name: cap.report() for name, cap in capability_table().items()}

"""Put the CuPy stand-in into ``sys.modules`` for the duration of one test (or a ``with`` block).

The application never imports this: production code keeps importing the real CuPy lazily, and
``gpu_kernels`` still imports cleanly without it. Entering :func:`emulated_cupy` saves whatever
``cupy``/``cupyx`` modules (or absences) ``sys.modules`` holds and restores them on exit, so a
test that checks the no-GPU behaviour (``tests/test_backend.py``) sees no CuPy afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from tests.gpu_emulation.fake_cupy import build_modules

_MISSING = object()


@contextmanager
def emulated_cupy(devices: int = 1) -> Iterator[ModuleType]:
    """Install the stand-in (``devices`` emulated devices); yields the ``cupy`` module."""
    modules = build_modules(devices)
    prefixes = ("cupy", "cupyx", "cupy_backends")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in prefixes}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(modules)
    try:
        yield modules["cupy"]
    finally:
        for name in [k for k in sys.modules if k.split(".")[0] in prefixes]:
            del sys.modules[name]
        sys.modules.update(saved)

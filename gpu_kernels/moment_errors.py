"""Propagated 1σ uncertainties of moment maps 0, 1 and 2 on the GPU (CuPy).

Same public function and signature as :mod:`cpu_fallback.moment_errors`, whose docstring holds
the formulas (bettermoments, Teague 2019, RNAAS 3, 173). Arrays in and out are CuPy arrays on
the current device; the per-tile sums are CuPy float64 reductions over the spectral axis (the
shared :mod:`kernel_common.moment_sigma` loop with ``xp = cupy``). CuPy is imported inside the
function.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.compute.contract import Case, Tolerance
from kernel_common.moment_sigma import sigma_maps

#: Agreement with the CPU reference (GPU parity tests, start-up self-test).
PARITY = Tolerance(rtol=1e-5, atol=1e-7)
#: Start-up self-test calls, on the inputs of :func:`app.compute.selftest.selftest_inputs`.
SELFTEST = (
    Case("moment_sigma_maps", ("cube", "v", "w", "channel_noise"), {"threshold": 0.1}),
    Case("moment_sigma_maps", ("cube", "v", "w", "noise"), {"include": (0.05, 10.0), "dispersion": True}),
)

#: Array type of this tree: a ``cupy.ndarray`` (CuPy is imported lazily, so typed as ``Any``).
_Array = Any


def moment_sigma_maps(
    cube: _Array,
    coords: _Array,
    widths: _Array,
    noise: _Array | float,
    *,
    threshold: float | None = None,
    include: float | Sequence[float] | None = None,
    exclude: float | Sequence[float] | None = None,
    dispersion: bool = False,
) -> dict[int, _Array]:
    """1σ maps of moments 0, 1 and 2 (see :func:`cpu_fallback.moment_errors.moment_sigma_maps`)."""
    import cupy  # noqa: PLC0415

    from kernel_common.views import to_host  # noqa: PLC0415

    return sigma_maps(cupy, cube, to_host(coords), to_host(widths), to_host(noise), threshold=threshold,
                      include=include, exclude=exclude, dispersion=dispersion)

"""The neutral kernel contract shared by ``cpu_fallback`` and ``gpu_kernels``.

Kernels import this module and nothing else from :mod:`app`. It holds only plain
data: dtype policy, tolerances and the list of kernel modules whose public
functions must match between the two trees (checked by ``tests/test_kernel_contract.py``).

Rules (see the engineering guide):

1. Same public names and ``inspect.signature`` in both trees.
2. Arrays in, arrays out on the tree's own device; array arguments positional,
   options keyword-only; axis order ``(spectral, y, x)``; NaN means blank.
3. Pure: no I/O, no device selection, no globals.
4. float32 stays float32; accumulate in float64 where cancellation bites.
5. Per-spectrum operations keep the spectral axis whole and are tiled over y-slabs.
"""

from __future__ import annotations

from dataclasses import dataclass

#: dtype every kernel receives for cube data (native byte order, C-contiguous).
CUBE_DTYPE = "float32"

#: Kernel modules that must exist, with identical public signatures, in both trees.
KERNEL_MODULES: tuple[str, ...] = (
    "cube_views",
    "moments",
    "casa_moments",
    "moment_errors",
    "noise",
    "pv",
    "linewidth",
    "baseline",
    "stacking",
    "isosurface",
    "stats",
    "fit2d",
    "contours",
    "region_flux",
)


@dataclass(frozen=True)
class Tolerance:
    """Relative/absolute tolerance for comparing a GPU result with the CPU reference."""

    rtol: float
    atol: float = 0.0


#: Tolerances used by GPU parity tests, per kernel module.
PARITY_TOLERANCE: dict[str, Tolerance] = {
    "cube_views": Tolerance(rtol=0.0),
    "moments": Tolerance(rtol=2e-5, atol=1e-6),
    "casa_moments": Tolerance(rtol=2e-5, atol=1e-6),
    "moment_errors": Tolerance(rtol=1e-5, atol=1e-7),
    "noise": Tolerance(rtol=1e-6),
    "pv": Tolerance(rtol=1e-6, atol=1e-7),
    "linewidth": Tolerance(rtol=1e-5),
    "baseline": Tolerance(rtol=1e-6, atol=1e-6),
    "stacking": Tolerance(rtol=1e-6),
    "isosurface": Tolerance(rtol=0.0, atol=1e-5),
    "stats": Tolerance(rtol=1e-9),
    "fit2d": Tolerance(rtol=1e-6, atol=1e-9),
    "contours": Tolerance(rtol=1e-9, atol=1e-12),
    "region_flux": Tolerance(rtol=1e-9, atol=1e-12),
}

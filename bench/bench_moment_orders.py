"""Orders 0+1+2+8 with σ maps in one pass against the sum of single-order calls (issue 17).

Kernel level, in memory, CPU (``cpu_fallback``): the multi-order path runs the kernel sweeps of
:func:`app.services.moment_multi.kernel_groups` and the σ kernel on each y-slab of 32 rows (as
the service does after one read of the slab); the baseline calls ``moment_maps`` once per order
and ``moment_sigma_maps`` once, each over the whole cube. Prints best-of-``--repeat`` seconds;
checks that the maps are identical.

``python -m bench.bench_moment_orders --shape 128 256 256 --repeat 3``
"""

from __future__ import annotations

import argparse

import numpy as np

from app.services.moment_multi import kernel_groups
from bench.common import SYNTHETIC_AXIS, best_of, synthetic_cube
from cpu_fallback import moment_errors, moments

ORDERS = (0, 1, 2, 8)


def multi(cube: np.ndarray, v: np.ndarray, w: np.ndarray, rms: float, rows: int = 32) -> dict:
    """All maps and σ maps slab by slab (one pass over the cube)."""
    nz, ny, nx = cube.shape
    out: dict = {}
    for y0 in range(0, ny, rows):
        block = cube[:, y0:y0 + rows]
        part: dict = {}
        for group in kernel_groups(ORDERS, "reference", False):
            part.update(moments.moment_maps(block, v, w, orders=group))
        part.update({("sigma", k): s for k, s in moment_errors.moment_sigma_maps(block, v, w, rms).items()})
        for key, val in part.items():
            out.setdefault(key, np.empty((ny, nx), dtype=np.float32))[y0:y0 + rows] = val
    return out


def singles(cube: np.ndarray, v: np.ndarray, w: np.ndarray, rms: float) -> dict:
    """One kernel call per order plus one σ call, each over the whole cube."""
    out: dict = {k: moments.moment_maps(cube, v, w, orders=(k,))[k] for k in ORDERS}
    out.update({("sigma", k): s for k, s in moment_errors.moment_sigma_maps(cube, v, w, rms).items()})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256), metavar=("NZ", "NY", "NX"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(args.shape)
    cube = synthetic_cube(shape)
    v, w = SYNTHETIC_AXIS.coords_km_s(shape[0]), SYNTHETIC_AXIS.widths_km_s(shape[0])
    t_multi, a = best_of(lambda: multi(cube, v, w, 0.05), args.repeat)
    t_single, b = best_of(lambda: singles(cube, v, w, 0.05), args.repeat)
    t_read, _ = best_of(lambda: np.nansum(cube, axis=0), args.repeat)
    same = all(np.array_equal(a[k], b[k], equal_nan=True) for k in ORDERS)
    close = all(np.allclose(a[("sigma", k)], b[("sigma", k)], rtol=1e-6, equal_nan=True) for k in (0, 1, 2))
    print(f"cube {shape} float32 ({cube.nbytes / 2**20:.0f} MiB), orders {ORDERS} + sigma 0-2")
    print(f"one pass (slabs of 32 rows): {t_multi:.3f} s; sum of single calls: {t_single:.3f} s; "
          f"ratio {t_single / t_multi:.2f}; numpy.nansum over the cube: {t_read:.3f} s")
    print(f"maps identical: {same}; sigma maps equal to 1e-6: {close}")


if __name__ == "__main__":
    main()

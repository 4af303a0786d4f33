"""Probe (issue 13): can orders 3-5 of the reference convention be computed in one read?

Run ``python -m bench.probe_moments35 [--size 512] [--repeat 5]``. Prints, in one thread's process
CPU time (best of ``--repeat``, interleaved with the floor ``np.sum`` over the in-memory cube):

- the compiled kernel :func:`cpu_fallback.compiled.moments_ref.moment_maps_raw` (two passes for
  orders 3-5), orders 2, 3, 4, 5;
- a stand-alone prototype of one read accumulating ``S_j = sum dv I s^j`` (``j = 0..5``) over the
  big-endian FITS memmap, four channels per pass, for kernel rows of 1024 and 8192 pixels, with
  ``s = (u - c) / h`` (channel range centre ``c``, half-width ``h``: ``|s| <= 1``) or
  ``s = u - m~`` (a fixed per-pixel shift; here the exact ``M1`` taken from the kernel, i.e. the
  best case of a shift estimate, not counting the read that estimate would cost);
- the accuracy of the one-read standardised moments ``mu_k / mu_2^(k/2)`` from the binomial
  conversion ``mu_k = sum_j C(k, j) (S_j / S_0) (-m)^(k - j)`` (``m = S_1 / S_0``) against the
  kernel's two-pass maps, over the pixels where the kernel's map is finite, in units of the
  tests' tolerance ``2e-5 |b| + 1e-5`` (the kernel's maps are float32: that rounding is included).

Nothing is written to ``bench/RESULTS.md``: this is a measurement for the issue's discussion.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from math import comb
from pathlib import Path

import numpy as np
from numba import njit, prange

from bench.common import SYNTHETIC_AXIS, synthetic_cube, synthetic_header_cards, write_fits_cube
from cpu_fallback.compiled.rawdata import group_rows, in_range, raw_args, value

NZ = 256


@njit(cache=False, fastmath={"contract"})
def _acc4(mode, r0, r1, r2, r3, w, s, shift, lo, hi, s0, s1, s2, s3, s4, s5):
    """Add ``dv I (s - shift)^j`` (``j = 0..5``) of four channels."""
    w0, w1, w2, w3 = w[0], w[1], w[2], w[3]
    for x in range(s0.size):
        e0, e1, e2, e3 = value(mode, r0, x), value(mode, r1, x), value(mode, r2, x), value(mode, r3, x)
        t0 = w0 * np.float64(e0) if in_range(e0, lo, hi) else 0.0
        t1 = w1 * np.float64(e1) if in_range(e1, lo, hi) else 0.0
        t2 = w2 * np.float64(e2) if in_range(e2, lo, hi) else 0.0
        t3 = w3 * np.float64(e3) if in_range(e3, lo, hi) else 0.0
        m = shift[x]
        d0, d1, d2, d3 = s[0] - m, s[1] - m, s[2] - m, s[3] - m
        s0[x] += ((t0 + t1) + t2) + t3
        t0, t1, t2, t3 = t0 * d0, t1 * d1, t2 * d2, t3 * d3
        s1[x] += ((t0 + t1) + t2) + t3
        t0, t1, t2, t3 = t0 * d0, t1 * d1, t2 * d2, t3 * d3
        s2[x] += ((t0 + t1) + t2) + t3
        t0, t1, t2, t3 = t0 * d0, t1 * d1, t2 * d2, t3 * d3
        s3[x] += ((t0 + t1) + t2) + t3
        t0, t1, t2, t3 = t0 * d0, t1 * d1, t2 * d2, t3 * d3
        s4[x] += ((t0 + t1) + t2) + t3
        s5[x] += ((t0 * d0 + t1 * d1) + t2 * d2) + t3 * d3


@njit(parallel=True, cache=False)
def _one_read(flat, geo, mode, s, w, shift, out):
    """``out[j, y, x] = sum dv I (s - shift[y, x])^j`` over the channels (a multiple of 4) of a raw block."""
    nz, ny, nx, sz, sy, _ = geo
    lo, hi = np.float32(-3.4e38), np.float32(3.4e38)
    for y in prange(ny):
        a0, a1, a2, a3, a4, a5 = np.zeros(nx), np.zeros(nx), np.zeros(nx), np.zeros(nx), np.zeros(nx), np.zeros(nx)
        for z0 in range(0, nz - 3, 4):
            b = z0 * sz + y * sy
            _acc4(mode, flat[b : b + nx], flat[b + sz : b + sz + nx], flat[b + 2 * sz : b + 2 * sz + nx],
                  flat[b + 3 * sz : b + 3 * sz + nx], w[z0 : z0 + 4], s[z0 : z0 + 4], shift[y], lo, hi,
                  a0, a1, a2, a3, a4, a5)
        out[0, y], out[1, y], out[2, y], out[3, y], out[4, y], out[5, y] = a0, a1, a2, a3, a4, a5


def standardised(sums: np.ndarray, k: int) -> np.ndarray:
    """``mu_k / mu_2^(k/2)`` from power sums ``sums[j] = sum dv I s^j`` (binomial conversion)."""
    with np.errstate(all="ignore"):
        tau = sums / sums[0]
        m = tau[1]

        def mu(n: int) -> np.ndarray:
            return sum(comb(n, j) * tau[j] * (-m) ** (n - j) for j in range(n + 1))

        return mu(k) / mu(2) ** (k / 2)


def cpu(fn: Callable[[], object]) -> float:
    """Process CPU seconds of one call."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    from app.io.fits_reader import open_fits_image  # noqa: PLC0415
    from cpu_fallback.compiled import runtime  # noqa: PLC0415
    from cpu_fallback.compiled.moments_ref import moment_maps_raw  # noqa: PLC0415
    from kernel_common.moment_plans import plan_axis  # noqa: PLC0415

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    n = args.size
    shape = (NZ, n, n)
    cube = synthetic_cube(shape)
    coords, widths = SYNTHETIC_AXIS.coords_km_s(NZ), SYNTHETIC_AXIS.widths_km_s(NZ)
    plan = plan_axis(NZ, coords, widths, [5], None)
    u, w = plan.u, plan.w
    c, h = 0.5 * (u.max() + u.min()), 0.5 * (u.max() - u.min())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.fits"
        write_fits_cube(path, cube, synthetic_header_cards(shape))
        image = open_fits_image(path)
        raw = image.source.read_raw().data
        runtime.configure(1, 1)
        maps = {k: moment_maps_raw(raw, coords, widths, orders=[k]) for k in (1, 3, 4, 5)}
        m1 = (maps[1][1] - plan.ref).astype(np.float64)
        m1 = np.where(np.isfinite(m1), m1, 0.0)
        cases: dict[str, Callable[[], object]] = {"np.sum (floor)": lambda: np.sum(cube)}
        for k in (2, 3, 4, 5):
            cases[f"kernel order {k}"] = lambda k=k: moment_maps_raw(raw, coords, widths, orders=[k])
        outs: dict[str, np.ndarray] = {}
        for label, rows, scaled in (("one read, centre, 1024-px rows", 1024, True),
                                    ("one read, centre, 8192-px rows", 8192, True),
                                    ("one read, shift M1, 8192-px rows", 8192, False)):
            view, r = group_rows(raw, rows)
            a = raw_args(view)
            s = (u - c) / h if scaled else u
            shift = np.zeros(view.shape[1:]) if scaled else np.ascontiguousarray(m1.reshape(view.shape[1:]))
            out = np.empty((6, *view.shape[1:]))
            outs[label] = out

            def run(a=a, s=s, shift=shift, out=out) -> None:
                _one_read(a.flat, a.geo, a.mode, s, w, shift, out)

            run()  # compile
            cases[label] = run
        best = dict.fromkeys(cases, np.inf)
        for _ in range(args.repeat):
            for label, fn in cases.items():
                best[label] = min(best[label], cpu(fn))
        floor = best["np.sum (floor)"]
        print(f"{n}x{n}x{NZ}, one thread, process CPU time, best of {args.repeat}; load {os.getloadavg()}")
        for label, t in best.items():
            print(f"  {label:36s} {t * 1e3:7.1f} ms  {t / floor:5.2f}x floor")
        print("max |one read - kernel| / (2e-5 |kernel| + 1e-5) of mu_k / sigma^k (kernel finite):")
        for label in ("one read, centre, 8192-px rows", "one read, shift M1, 8192-px rows"):
            sums = outs[label].reshape(6, n, n)
            errs = []
            for k in (3, 4, 5):
                ref = maps[k][k].astype(np.float64) + (3.0 if k == 4 else 0.0)
                got = standardised(sums, k)
                ok = np.isfinite(ref)
                tol = 2e-5 * np.abs(ref[ok]) + 1e-5  # the tests' tolerance (tests/kernels)
                bad = ~(np.abs(got[ok] - ref[ok]) <= tol)
                errs.append(f"order {k}: {np.nanmax(np.abs(got[ok] - ref[ok]) / tol):.2g} x tol, {bad.sum()} px over")
            print(f"  {label}: " + ", ".join(errs))
        image.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Line-fit kernel cost on NGC 5921 (channels 5-50), interleaved with the line-width kernel it extends.

Best of 3 per kernel, the kernels interleaved in each round (the machine is shared: compare ratios),
plus the reduced-chi^2 median and the component counts quoted in the README. Run from the repo root:
``PYTHONPATH=. python bench/bench_linefit.py``.
"""

from __future__ import annotations

import os
import time

import numpy as np
from astropy.io import fits

from app.settings import DEMO_DATA_ROOT
from cpu_fallback.linefit import gaussian_linefit
from cpu_fallback.linewidth import gaussian_linewidth


def main() -> None:
    with fits.open(DEMO_DATA_ROOT / "ngc5921_hi_cube.fits.gz") as hdul:
        data = np.squeeze(hdul[0].data).astype(np.float32)
        h = hdul[0].header
    v = (h["CRVAL3"] + (np.arange(data.shape[0]) + 1 - h["CRPIX3"]) * h["CDELT3"]) / 1e3  # VRAD, km/s
    z = slice(5, 51)
    cube, vv = np.ascontiguousarray(data[z]), v[z]
    dv = np.abs(np.gradient(vv))
    runs = {"linewidth": lambda: gaussian_linewidth(cube, vv, dv),
            "linefit components=1": lambda: gaussian_linefit(cube, vv, dv),
            "linefit components=2": lambda: gaussian_linefit(cube, vv, dv, components=2)}
    best: dict[str, float] = {}
    for _ in range(3):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            best[name] = min(best.get(name, np.inf), time.perf_counter() - t0)
    base = best["linewidth"]
    for name, t in best.items():
        print(f"{name:24s} {t:7.3f} s  ({t / base:.2f}x line width)")
    print("load average", os.getloadavg())
    one = gaussian_linefit(cube, vv, dv)
    two = gaussian_linefit(cube, vv, dv, components=2)
    print("reduced chi2 median (1 component):", float(np.nanmedian(one["reduced_chi2"])))
    print("pixels by ncomp (2 requested):", dict(zip(*np.unique(two["ncomp"], return_counts=True), strict=True)))


if __name__ == "__main__":
    main()

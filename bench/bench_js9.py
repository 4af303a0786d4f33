"""JS9 analysis (issue 7): imstat and imfit, our native engine against casatasks, in one run.

Run ``python -m bench.bench_js9 [--repeat N] [--skip-full-imfit] [--gpu]``.

Images: the 3C 273 continuum image (256², real VLA data, decompressed from the demo data) and a
synthetic 4096² float32 image (Gaussian noise of 1 mJy/beam, a 0.5 Jy/beam elliptical source at
(2000.3, 2100.7), a blank (NaN) border of 10 rows), both written as FITS and read back from disk
by every contender.

Timed (best of ``--repeat``, after one warm-up call):

- **native imstat** — the service path exactly as the API runs it (open the FITS file, read the
  region, ``cpu_fallback.stats`` in parallel row chunks, CASA keys), and the kernel alone on the
  in-memory plane (one chunk, one thread);
- **casatasks imstat** — on the same file and region (CRTF from the same region object);
- **imfit** — native (estimate + batched Levenberg–Marquardt) against casatasks ``imfit``; the
  whole 4096² plane once each (CASA needs minutes there; ``--skip-full-imfit`` leaves it out);
- ``--gpu`` adds the device kernels (``gpu_kernels.stats`` / ``fit2d`` on a device-resident plane).

The numbers agree before they are timed (the script checks npts, median and the fitted centre).
Results go to ``bench/RESULTS.md`` (section ``## JS9 analysis (issue 7)``) and
``bench/results_js9.json``. Target: native imstat ≥ 10× faster than casatasks imstat on the CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    BENCH_DIR,
    best_of,
    command_line,
    fmt_s,
    fmt_x,
    machine_description,
    machine_markdown,
    markdown_table,
    ratio,
    replace_section,
)

HEADING = "JS9 analysis (issue 7)"
DEMO_GZ = Path(__file__).resolve().parent.parent / "app" / "demo_data" / "3c273_continuum.fits.gz"
SYNTHETIC_N = 4096
SOURCE = (0.5, 2000.3, 2100.7, 3.1, 2.2, 0.0)  # amplitude (Jy/beam), x0, y0, σx, σy (pixels), θ
TARGET_IMSTAT_SPEEDUP = 10.0


def write_synthetic(path: Path, n: int = SYNTHETIC_N, seed: int = 1) -> None:
    """The synthetic image: noise + one elliptical Gaussian + a NaN border, RA/Dec SIN, Jy/beam."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    data = rng.normal(0.0, 1e-3, (n, n)).astype(np.float32)
    amp, x0, y0, sx, sy, _ = SOURCE
    ys, xs = slice(int(y0) - 40, int(y0) + 41), slice(int(x0) - 40, int(x0) + 41)
    yy, xx = np.mgrid[ys, xs]
    data[ys, xs] += (amp * np.exp(-0.5 * (((xx - x0) / sx) ** 2 + ((yy - y0) / sy) ** 2))).astype(np.float32)
    data[:10, :] = np.nan
    header = fits.Header()
    for i, (ctype, crval, cdelt) in enumerate((("RA---SIN", 180.0, -1 / 3600), ("DEC--SIN", 30.0, 1 / 3600)), 1):
        header[f"CTYPE{i}"], header[f"CRVAL{i}"], header[f"CDELT{i}"] = ctype, crval, cdelt
        header[f"CRPIX{i}"], header[f"CUNIT{i}"] = n / 2 + 1, "deg"
    header["BUNIT"], header["BMAJ"], header["BMIN"], header["BPA"] = "Jy/beam", 3 / 3600, 2 / 3600, 10.0
    fits.PrimaryHDU(data, header).writeto(path, overwrite=True)


def prepare(workdir: Path) -> dict[str, Path]:
    c3 = workdir / "3c273_continuum.fits"
    with gzip.open(DEMO_GZ, "rb") as src, c3.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    syn = workdir / f"synthetic_{SYNTHETIC_N}.fits"
    print(f"writing the synthetic {SYNTHETIC_N}² image ...", flush=True)
    write_synthetic(syn)
    return {"3c273": c3, "synthetic": syn}


def plane(path: Path) -> np.ndarray:
    """The image as a native float32 ``(y, x)`` array."""
    from astropy.io import fits

    data = np.asarray(fits.getdata(path), dtype=np.float32)
    while data.ndim > 2:
        data = data[0]
    return data


# -- contenders ----------------------------------------------------------------------------------


def native_task(task: str, path: Path, region: dict | None, params: dict | None = None,
                cache: Any = None) -> dict[str, Any]:
    """One native-engine task through the service path on the CPU: open the file (or take it from the
    service's open-image ``cache``), read the region, compute, shape the result."""
    from app.compute.backend import Backend
    from app.compute.dispatch import JobContext
    from app.services.js9 import native_engine
    from app.services.js9.images import open_view
    from app.services.js9.regions import parse_region

    ctx = JobContext(Backend("cpu"), None, 64 << 20)
    view = open_view(path, cache=cache)
    try:
        return getattr(native_engine, task)(ctx, view, parse_region(region), params or {})
    finally:
        view.close()


def casa_task(task: str, path: Path, crtf: str, **kwargs: Any) -> Any:
    from app.casa_runtime import run_casa_task

    return run_casa_task(task, imagename=str(path), region=crtf, **kwargs)


def have_casa() -> bool:
    from app.casa_runtime import casatasks_available

    return casatasks_available()


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()  # warm-up (imports, page cache, CASA's first-call set-up)
    return best_of(fn, repeat)


# -- measurements --------------------------------------------------------------------------------


def bench_imstat(files: dict[str, Path], repeat: int, casa: bool) -> list[dict[str, Any]]:
    from app.services.js9.images import ImageCache
    from cpu_fallback import stats

    cases = [
        ("3c273", "3C 273 256², whole image", None),
        ("3c273", "3C 273 256², circle r=20", {"shape": "circle", "x": 129, "y": 129, "r": 20}),
        ("synthetic", "synthetic 4096², whole image", None),
        ("synthetic", "synthetic 4096², circle r=500", {"shape": "circle", "x": 2001, "y": 2101, "r": 500}),
    ]
    rows = []
    for key, title, region in cases:
        path = files[key]
        print(f"imstat: {title}", flush=True)
        t_cold, ours = timed(lambda p=path, r=region: native_task("imstat", p, r), repeat)
        cache = ImageCache()
        t_native, _ = timed(lambda p=path, r=region, c=cache: native_task("imstat", p, r, cache=c), repeat)
        data = plane(path)
        t_kernel = None
        if region is None:
            t_kernel, _ = timed(lambda d=data: stats.region_stats(d[None]), repeat)
        row: dict[str, Any] = {"case": title, "native_s": t_native, "native_cold_s": t_cold, "kernel_s": t_kernel,
                               "npts": ours["DATA"]["npts"]}
        if casa:
            crtf = ours["region"]["crtf"] if ours["region"] else ""
            t_casa, ref = timed(lambda p=path, c=crtf: casa_task("imstat", p, c), repeat)
            assert int(ref["npts"][0]) == ours["DATA"]["npts"], (title, ref["npts"], ours["DATA"]["npts"])
            assert abs(float(ref["median"][0]) - ours["DATA"]["median"]) <= 1e-6 * abs(float(ref["rms"][0]))
            row.update(casa_s=t_casa, speedup=ratio(t_casa, t_native), speedup_cold=ratio(t_casa, t_cold))
        rows.append(row)
    return rows


def bench_imfit(files: dict[str, Path], repeat: int, casa: bool, full: bool) -> list[dict[str, Any]]:
    cases = [
        ("3c273", "3C 273 256², whole image", None, repeat),
        ("3c273", "3C 273 256², circle r=20", {"shape": "circle", "x": 129, "y": 129, "r": 20}, repeat),
        ("synthetic", "synthetic 4096², box 64×64", {"shape": "box", "x": 2001.5, "y": 2101.5, "width": 64,
                                                      "height": 64}, repeat),
    ]
    if full:
        cases.append(("synthetic", "synthetic 4096², whole image", None, 1))
    rows = []
    for key, title, region, reps in cases:
        path = files[key]
        print(f"imfit: {title}", flush=True)
        if reps == 1:  # too slow for a warm-up call
            t0 = time.perf_counter()
            ours = native_task("imfit", path, region)
            t_native = time.perf_counter() - t0
        else:
            t_native, ours = timed(lambda p=path, r=region: native_task("imfit", p, r), reps)
        fit = ours["fit"]
        row: dict[str, Any] = {"case": title, "native_s": t_native, "iterations": fit["iterations"],
                               "center": fit["pixelcoords"]}
        if casa:
            crtf = ours["region"]["crtf"] if ours["region"] else ""
            if reps == 1:
                t0 = time.perf_counter()
                ref = casa_task("imfit", path, crtf)
                t_casa = time.perf_counter() - t0
            else:
                t_casa, ref = timed(lambda p=path, c=crtf: casa_task("imfit", p, c), reps)
            centre = [float(v) for v in ref["results"]["component0"]["pixelcoords"]]
            assert max(abs(a - b) for a, b in zip(centre, fit["pixelcoords"], strict=True)) < 0.05, (title, centre)
            row.update(casa_s=t_casa, speedup=ratio(t_casa, t_native), casa_center=centre)
        rows.append(row)
    return rows


def bench_gpu(files: dict[str, Path], repeat: int) -> list[dict[str, Any]]:
    """Device kernels on a device-resident plane (sync after each call)."""
    import cupy as cp

    from gpu_kernels import fit2d as gfit
    from gpu_kernels import stats as gstats

    rows = []
    for key, title in (("3c273", "3C 273 256²"), ("synthetic", "synthetic 4096²")):
        data = cp.asarray(plane(files[key])[None])

        def run_stats(d: Any = data) -> Any:
            out = gstats.region_stats(d)
            cp.cuda.Device().synchronize()
            return out

        t_stats, _ = timed(run_stats, repeat)

        def run_fit(d: Any = data) -> Any:
            p0 = gfit.estimate_gaussians(d[0])
            out = gfit.fit_gaussians(d, p0[None])
            cp.cuda.Device().synchronize()
            return out

        t_fit, _ = timed(run_fit, 1 if key == "synthetic" else repeat)
        rows.append({"case": title, "gpu_imstat_s": t_stats, "gpu_imfit_whole_s": t_fit})
    return rows


# -- report --------------------------------------------------------------------------------------


def report(desc: dict[str, Any], imstat: list[dict], imfit: list[dict], gpu: list[dict] | None, casa: bool) -> str:
    lines = [
        f"Command: `{command_line()}`",
        "",
        machine_markdown(desc),
        "",
        "Native = the service path of `POST /api/visualization/js9/analysis` without HTTP (the FITS",
        "file, read the region, compute in parallel row chunks, CASA keys); casatasks = `imstat`/`imfit`",
        "on the same file and region. Best of the repeats after a warm-up call. Both sides agree before being timed",
        "(npts and median for imstat, the fitted centre within 0.05 px for imfit).",
        "",
        "### imstat",
        "",
        markdown_table(
            ["case", "npts", "native, image open", "native, cold open", "native kernel only", "casatasks imstat",
             "speed-up (open / cold)"],
            [[r["case"], r["npts"], fmt_s(r["native_s"]), fmt_s(r["native_cold_s"]), fmt_s(r["kernel_s"]),
              fmt_s(r.get("casa_s")), f"{fmt_x(r.get('speedup'))} / {fmt_x(r.get('speedup_cold'))}"] for r in imstat],
        ),
        "",
        "*Image open*: the server's open-image cache holds the file (the usual JS9 case: many tasks on",
        "the image on screen); *cold open*: the FITS header, WCS (and gzip) are parsed for the call, as",
        "casatasks does for every call. *Kernel only*: `cpu_fallback.stats` on the in-memory plane, one",
        "chunk, one thread.",
        "",
        "### imfit (one elliptical Gaussian, no background)",
        "",
        markdown_table(
            ["case", "native", "LM iterations", "casatasks imfit", "speed-up"],
            [[r["case"], fmt_s(r["native_s"]), r["iterations"], fmt_s(r.get("casa_s")), fmt_x(r.get("speedup"))]
             for r in imfit],
        ),
    ]
    if casa:
        worst = min(r["speedup"] for r in imstat if r["case"].endswith("whole image"))
        verdict = "met" if worst >= TARGET_IMSTAT_SPEEDUP else "NOT met"
        lines += ["", f"Target (native imstat ≥ {TARGET_IMSTAT_SPEEDUP:g}× casatasks imstat on the whole image, CPU): "
                  f"{verdict} — smallest whole-image speed-up {fmt_x(worst)}."]
    if gpu:
        lines += ["", "### GPU kernels (device-resident plane)", "",
                  markdown_table(["case", "imstat kernel", "imfit whole image"],
                                 [[r["case"], fmt_s(r["gpu_imstat_s"]), fmt_s(r["gpu_imfit_whole_s"])] for r in gpu])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-full-imfit", action="store_true", help="leave out imfit on the whole 4096² image")
    parser.add_argument("--gpu", action="store_true", help="also time the CuPy kernels")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    args = parser.parse_args(argv)
    casa = have_casa()
    if not casa:
        print("casatasks is not installed: timing the native engine only")
    with tempfile.TemporaryDirectory(prefix="bench-js9-") as tmp:
        files = prepare(Path(tmp))
        imstat = bench_imstat(files, args.repeat, casa)
        imfit = bench_imfit(files, args.repeat, casa, not args.skip_full_imfit)
        gpu = bench_gpu(files, args.repeat) if args.gpu else None
    desc = machine_description(gpu=args.gpu)
    text = report(desc, imstat, imfit, gpu, casa)
    print(text)
    if not args.no_write:
        replace_section(HEADING, text)
        payload = {"machine": desc, "imstat": imstat, "imfit": imfit, "gpu": gpu}
        (BENCH_DIR / "results_js9.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

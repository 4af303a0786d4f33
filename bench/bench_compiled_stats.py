"""Issue 13: compiled JS9 imstat and compiled baseline against today's NumPy path (and casatasks), interleaved.

Run ``python -m bench.bench_compiled_stats [--repeat N] [--size 512] [--no-write]``.

- **imstat**: the JS9 service path (``native_engine.imstat`` on an open image, as
  ``bench.bench_js9`` times it) with the compiled kernel (``cpu_fallback.compiled.stats``, the
  default on the CPU) and with the NumPy oracle (``VISIVO_COMPILED=0``: sorted runs in parallel row
  chunks), and casatasks ``imstat`` on the same file and region; 3C 273 (256²) and the synthetic
  4096² image of ``bench.bench_js9``.
- **baseline** (order 1): today's kernel ``cpu_fallback.baseline.subtract_baseline`` on the
  in-memory cube (the figure of ``bench.bench_spectral``), the compiled
  ``cpu_fallback.compiled.baseline.subtract_baseline_raw`` on the same in-memory cube and on the
  big-endian FITS memmap (what the service hands it); synthetic ``size² x 256`` (line-free
  0-39, 216-255) and NGC 5921 (0-9, 46-55).

Each repeat times every contender once, in turn (interleaved: the machine is shared), and the best
of the repeats is reported with the load average at start and end. Agreement is checked before
timing. Results go to the ``## Compiled imstat and baseline (issue 13)`` section of ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    command_line,
    fmt_s,
    fmt_x,
    machine_description,
    machine_markdown,
    markdown_table,
    ratio,
    replace_section,
    synthetic_cube,
    synthetic_header_cards,
    write_fits_cube,
)

HEADING = "Compiled imstat and baseline (issue 13)"
DEMO = Path(__file__).resolve().parent.parent / "app" / "demo_data"


def interleaved(contenders: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    """Best wall-clock seconds of each contender; every repeat runs each once, in turn (after a warm-up)."""
    for fn in contenders.values():
        fn()
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeat):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def _oracle(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` with the compiled kernels switched off (``VISIVO_COMPILED=0``)."""

    def run() -> Any:
        os.environ["VISIVO_COMPILED"] = "0"
        try:
            return fn()
        finally:
            os.environ.pop("VISIVO_COMPILED", None)

    return run


def bench_imstat(files: dict[str, Path], repeat: int, casa: bool) -> list[dict[str, Any]]:
    from app.services.js9.images import ImageCache
    from bench.bench_js9 import casa_task, native_task

    cases = [
        ("3c273", "3C 273 256², whole image", None),
        ("3c273", "3C 273 256², circle r=20", {"shape": "circle", "x": 129, "y": 129, "r": 20}),
        ("synthetic", "synthetic 4096², whole image", None),
        ("synthetic", "synthetic 4096², circle r=500", {"shape": "circle", "x": 2001, "y": 2101, "r": 500}),
    ]
    rows = []
    for key, title, region in cases:
        print(f"imstat: {title}", flush=True)
        path, cache = files[key], ImageCache()
        fast = lambda p=path, r=region, c=cache: native_task("imstat", p, r, cache=c)  # noqa: E731
        slow = _oracle(fast)
        ours, ref = fast()["DATA"], slow()["DATA"]
        assert all(ours[k] == ref[k] for k in ("npts", "median", "q1", "q3", "medabsdevmed", "minpos", "maxpos"))
        contenders = {"compiled": fast, "numpy": slow}
        if casa:
            crtf = fast()["region"]["crtf"] if region else ""
            out = casa_task("imstat", path, crtf)
            assert int(out["npts"][0]) == ours["npts"]
            assert abs(float(out["median"][0]) - ours["median"]) <= 1e-6 * abs(float(out["rms"][0]))
            contenders["casa"] = lambda p=path, c=crtf: casa_task("imstat", p, c)
        t = interleaved(contenders, repeat)
        rows.append({"case": title, "npts": ours["npts"], **{f"{k}_s": v for k, v in t.items()}})
    return rows


def bench_baseline(cubes: dict[str, tuple[np.ndarray, Path, np.ndarray]], repeat: int) -> list[dict[str, Any]]:
    from app.io.fits_reader import open_fits_image
    from cpu_fallback.baseline import subtract_baseline
    from cpu_fallback.compiled.baseline import subtract_baseline_raw

    rows = []
    for title, (cube, path, free) in cubes.items():
        print(f"baseline: {title}", flush=True)
        image = open_fits_image(path)
        try:
            raw = image.source.read_raw()
            want, wpart = subtract_baseline(cube, free, order=1)
            got, part, _ = subtract_baseline_raw(raw.data, free, order=1, bscale=raw.bscale, bzero=raw.bzero,
                                                 blank=raw.blank)
            assert np.array_equal(part[2:], wpart[2:]) and np.array_equal(np.isnan(got), np.isnan(want))
            ok = np.isfinite(want)
            worst = float(np.max(np.abs(got[ok] - want[ok]) / (np.abs(cube[ok]) + np.abs(want[ok]))))
            del got, want
            scaling = {"bscale": raw.bscale, "bzero": raw.bzero, "blank": raw.blank}
            t = interleaved({
                "numpy": lambda c=cube, f=free: subtract_baseline(c, f, order=1),
                "compiled_memory": lambda c=cube, f=free: subtract_baseline_raw(c, f, order=1),
                "compiled_fits": lambda d=raw.data, f=free, s=scaling: subtract_baseline_raw(d, f, order=1, **s),
            }, repeat)
        finally:
            image.close()
        rows.append({"case": title, "worst_rel_diff": worst, "outcomes": part[3:].astype(int).tolist(),
                     **{f"{k}_s": v for k, v in t.items()}})
    return rows


def prepare(workdir: Path, size: int) -> tuple[dict[str, Path], dict[str, tuple[np.ndarray, Path, np.ndarray]]]:
    from astropy.io import fits

    from bench.bench_js9 import write_synthetic

    files = {}
    for key, name in (("3c273", "3c273_continuum.fits"), ("ngc5921", "ngc5921_hi_cube.fits")):
        files[key] = workdir / name
        with gzip.open(DEMO / f"{name}.gz", "rb") as src, files[key].open("wb") as dst:
            shutil.copyfileobj(src, dst)
    print("writing the synthetic images ...", flush=True)
    files["synthetic"] = workdir / "synthetic_4096.fits"
    write_synthetic(files["synthetic"])
    shape = (256, size, size)
    cube = synthetic_cube(shape)
    spectral = workdir / f"synthetic_{size}.fits"
    write_fits_cube(spectral, cube, synthetic_header_cards(shape))
    ngc = np.asarray(fits.getdata(files["ngc5921"]), dtype=np.float32)
    while ngc.ndim > 3:
        ngc = ngc[0]
    cubes = {f"synthetic {size}×{size}×256": (cube, spectral, np.r_[0:40, 216:256]),
             "NGC 5921 256×256×56": (ngc, files["ngc5921"], np.r_[0:10, 46:56])}
    return files, cubes


def report(desc: dict[str, Any], imstat: list[dict], baseline: list[dict], load_end: str) -> str:
    return "\n".join([
        f"Command: `{command_line()}` (from the repository root). Script: `bench/bench_compiled_stats.py`.",
        "",
        machine_markdown(desc),
        f"- load average (1/5/15 min) at end: {load_end}",
        "",
        "Contenders run in turn within each repeat (interleaved), best of the repeats; the machine is shared by",
        "several engineers (2 vCPUs, see the load average), so single figures are noisy and the ratios of the",
        "same run are what to read. The numbers agree before they are timed.",
        "",
        "### JS9 imstat (service path, image open)",
        "",
        "*compiled*: `cpu_fallback.compiled.stats` (one pass over the stored FITS data, one selection pass);",
        "*NumPy*: today's path (`VISIVO_COMPILED=0`: sorted runs in parallel row chunks); casatasks `imstat` on",
        "the same file and region. Same npts, median, quartiles, MAD and positions on both of ours.",
        "",
        markdown_table(
            ["case", "npts", "compiled", "NumPy", "casatasks", "compiled vs casatasks", "compiled vs NumPy"],
            [[r["case"], r["npts"], fmt_s(r["compiled_s"]), fmt_s(r["numpy_s"]), fmt_s(r.get("casa_s")),
              fmt_x(ratio(r.get("casa_s"), r["compiled_s"])), fmt_x(ratio(r["numpy_s"], r["compiled_s"]))]
             for r in imstat]),
        "",
        "### Baseline subtraction (order 1, kernel)",
        "",
        "*NumPy*: today's `cpu_fallback.baseline.subtract_baseline` on the in-memory float32 cube; *compiled*:",
        "`cpu_fallback.compiled.baseline.subtract_baseline_raw` on the same cube and on the big-endian FITS",
        "memmap (the service's input). Same outcome counts; worst residual difference relative to `|I| + |b|`.",
        "",
        markdown_table(
            ["cube", "NumPy", "compiled (memory)", "compiled (FITS memmap)", "faster than NumPy (memory / FITS)",
             "outcomes [unchanged, order 0, order 1]", "worst rel. diff"],
            [[r["case"], fmt_s(r["numpy_s"]), fmt_s(r["compiled_memory_s"]), fmt_s(r["compiled_fits_s"]),
              f"{fmt_x(ratio(r['numpy_s'], r['compiled_memory_s']))} / "
              f"{fmt_x(ratio(r['numpy_s'], r['compiled_fits_s']))}",
              r["outcomes"], f"{r['worst_rel_diff']:.1e}"] for r in baseline]),
    ])


def main(argv: list[str] | None = None) -> int:
    from bench.bench_js9 import have_casa
    from cpu_fallback.compiled import runtime

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=512, help="spatial size of the synthetic baseline cube")
    parser.add_argument("--no-write", action="store_true", help="print only; do not touch RESULTS.md")
    args = parser.parse_args(argv)
    if not runtime.available():
        raise SystemExit("numba is not available (or VISIVO_COMPILED=0): nothing to compare")
    runtime.warm_up()
    desc = machine_description()
    casa = have_casa()
    with tempfile.TemporaryDirectory(prefix="bench-h13-") as tmp:
        files, cubes = prepare(Path(tmp), args.size)
        imstat = bench_imstat(files, args.repeat, casa)
        baseline = bench_baseline(cubes, args.repeat)
    load_end = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    text = report(desc, imstat, baseline, load_end)
    print(text)
    if not args.no_write:
        replace_section(HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Orders 0+1+2+8 with σ maps in one request, against the sum of single requests and spectral-cube (issue 17).

Request level, CPU, in process (FastAPI ``TestClient``, product cache off, ``VISIVO_BACKEND=cpu``):

- **one request**: ``POST /v1/products/moment {"orders": [0, 1, 2, 8], "uncertainty": true}`` (the noise
  estimated per channel by the server, 1.4826·MAD, as a user without an rms gets it; no mask, so the maps
  are spectral-cube's; a given ``rms`` would also mask at ``snr·rms``);
- **single requests**: the same maps and σ maps as four requests (orders 0, 1, 2 with
  ``uncertainty: true``, order 8 without; σ exists for orders 0-2 only), times summed;
- **maps only**: the one request without ``uncertainty`` (what σ maps add);
- **spectral-cube**: ``SpectralCube.read`` + ``moment(order=0/1/2)`` + ``max`` on the same FITS file
  (it has no σ maps: spectral-cube issue 695).

Kernel level (in memory, the σ maps of the whole cube): the previous two-pass NumPy formulas
(copied below as the "before"), today's NumPy twin (power sums as two matrix products) and the compiled
one-pass kernel (``cpu_fallback/compiled/moment_errors.py``, the CPU job's fast path).

Every round runs each case once, in turn (interleaved), so machine load hits them alike; the table
shows the best of ``--repeat`` rounds, the load average before and after, and checks that the
one request's maps and σ maps equal the single requests'.

``python -m bench.bench_moment_sigma --shape 128 256 256 --repeat 5``  (``--write`` updates RESULTS.md)
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    SYNTHETIC_AXIS,
    command_line,
    fmt_s,
    machine_description,
    machine_markdown,
    markdown_table,
    replace_section,
    synthetic_cube,
    synthetic_header_cards,
    write_fits_cube,
)

HEADING = "Moment orders with σ maps per request (issue 17)"
ORDERS = (0, 1, 2, 8)
RMS = 0.05


def two_pass_sigma(cube: np.ndarray, v: np.ndarray, w: np.ndarray, rms: float) -> dict[int, np.ndarray]:
    """The σ maps as the kernel computed them before issue 17's rewrite (two passes, tile temporaries)."""
    nz, ny, nx = cube.shape
    u = (v - v.mean())[:, None]
    wd, sd = np.abs(w)[:, None], np.full((nz, 1), rms)
    out = {k: np.empty((ny, nx), np.float32) for k in (0, 1, 2)}
    rows = max(1, min(ny, (1 << 21) // max(1, nz * nx)))
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        x = np.asarray(cube[:, y0:y1], dtype=np.float64).reshape(nz, -1)
        keep = np.isfinite(x)
        with np.errstate(invalid="ignore", divide="ignore"):
            xk = np.where(keep, x, 0.0)
            a = np.where(keep, (wd * sd) ** 2, 0.0)
            s0 = np.sum(xk * wd, axis=0)
            m1 = np.sum(xk * wd * u, axis=0) / s0
            d = u - m1[None, :]
            var = np.sum(xk * wd * d * d, axis=0) / s0
            n = np.sum(keep, axis=0)
            bad = (n == 0) | (s0 == 0)
            sig = {0: np.sqrt(np.sum(a, axis=0)), 1: np.sqrt(np.sum(a * d * d, axis=0)) / np.abs(s0),
                   2: np.sqrt(np.sum(a * (d * d - var[None, :]) ** 2, axis=0)) / np.abs(s0)}
        out[0][y0:y1] = np.where(n == 0, np.nan, sig[0]).reshape(y1 - y0, nx)
        for k in (1, 2):
            out[k][y0:y1] = np.where(bad, np.nan, sig[k]).reshape(y1 - y0, nx)
    return out


def spectral_cube_maps(path: Path) -> dict[int, np.ndarray]:
    """spectral-cube: read and compute orders 0, 1, 2 (``moment``) and 8 (``max``), km/s axis."""
    import astropy.units as u  # noqa: PLC0415
    from spectral_cube import SpectralCube  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cube = SpectralCube.read(str(path)).with_spectral_unit(u.km / u.s)
        cube.allow_huge_operations = True
        return {k: np.asarray((cube.max(axis=0) if k == 8 else cube.moment(order=k, axis=0)).value) for k in ORDERS}


def _decode(text: str, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").reshape(shape)


def run(shape: tuple[int, int, int], repeat: int, workdir: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient  # noqa: PLC0415

    from app.main import create_app  # noqa: PLC0415
    from app.settings import Settings  # noqa: PLC0415
    from cpu_fallback import moment_errors  # noqa: PLC0415
    from cpu_fallback.compiled import moment_errors as compiled_errors  # noqa: PLC0415

    cube = synthetic_cube(shape)
    path = workdir / "sigma_bench.fits"
    write_fits_cube(path, cube, synthetic_header_cards(shape))
    v, w = SYNTHETIC_AXIS.coords_km_s(shape[0]), SYNTHETIC_AXIS.widths_km_s(shape[0])
    settings = Settings(token="bench", token_file=workdir / "tok", output_dir=workdir / "out", data_roots=str(workdir),
                        backend="cpu", product_cache_capacity=0, workers=2, heavy_slots=1)
    times: dict[str, list[float]] = {}
    load_before = os.getloadavg()
    with TestClient(create_app(settings)) as client:
        client.headers["X-Visivo-Token"] = "bench"
        opened = client.post("/v1/datasets/open", json={"path": str(path)}).json()
        headers = {"X-Visivo-Session": opened["session_id"]}
        ds = opened["dataset_id"]

        def post(**body: Any) -> dict:
            answer = client.post("/v1/products/moment", json={"dataset_id": ds, **body}, headers=headers).json()
            assert answer.get("valid") is True, str(answer)[:300]
            return answer

        def one() -> dict:
            return post(orders=list(ORDERS), uncertainty=True)

        def singles() -> list[dict]:
            return [post(order=k, uncertainty=k != 8) for k in ORDERS]

        cases = {
            "one request, orders 0+1+2+8 + σ 0-2": one,
            "single requests (4), summed": singles,
            "one request, maps only (no σ)": lambda: post(orders=list(ORDERS)),
            "spectral-cube, maps only (no σ)": lambda: spectral_cube_maps(path),
            "σ kernel: two-pass NumPy (before)": lambda: two_pass_sigma(cube, v, w, RMS),
            "σ kernel: NumPy power sums (oracle now)": lambda: moment_errors.moment_sigma_maps(cube, v, w, RMS),
            "σ kernel: compiled one pass (CPU fast path)": lambda: compiled_errors.moment_sigma_maps(cube, v, w, RMS),
        }
        results: dict[str, Any] = {}
        for fn in cases.values():  # warm (compilation, first reads)
            fn()
        for _ in range(repeat):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                results[name] = fn()
                times.setdefault(name, []).append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    ny, nx = shape[1:]
    multi, single = results["one request, orders 0+1+2+8 + σ 0-2"], results["single requests (4), summed"]
    same_maps = all(np.array_equal(_decode(m["data_base64"], (ny, nx)), _decode(s["data_base64"], (ny, nx)),
                                   equal_nan=True) for m, s in zip(multi["maps"], single, strict=True))
    same_sigma = all(np.array_equal(_decode(m["sigma_base64"], (ny, nx)), _decode(s["sigma_base64"], (ny, nx)),
                                    equal_nan=True) for m, s in zip(multi["maps"][:3], single[:3], strict=True))
    before = results["σ kernel: two-pass NumPy (before)"]
    now = results["σ kernel: compiled one pass (CPU fast path)"]
    sigma_close = all(np.allclose(before[k], now[k], rtol=1e-5, equal_nan=True) for k in (0, 1, 2))
    sc = results["spectral-cube, maps only (no σ)"]
    ours0 = _decode(multi["maps"][0]["data_base64"], (ny, nx))
    both = np.isfinite(ours0) & np.isfinite(sc[0])
    sc_close = bool(both.sum() > 0.9 * ny * (nx - 4) and np.allclose(ours0[both], sc[0][both], rtol=1e-4, atol=1e-4))
    return {"shape": shape, "best": {k: min(t) for k, t in times.items()}, "load": (load_before, load_after),
            "same_maps": same_maps, "same_sigma": same_sigma, "sigma_close": sigma_close, "sc_mom0_close": sc_close,
            "repeat": repeat}


def render(report: dict[str, Any]) -> str:
    best = report["best"]
    one = best["one request, orders 0+1+2+8 + σ 0-2"]
    rows = [(name, fmt_s(t), f"{t / one:.2f}") for name, t in best.items() if not name.startswith("σ kernel")]
    before = best["σ kernel: two-pass NumPy (before)"]
    krows = [(name, fmt_s(t), f"{before / t:.1f}×") for name, t in best.items() if name.startswith("σ kernel")]
    nz, ny, nx = report["shape"]
    lb, la = report["load"]
    return "\n".join([
        f"Command: `{command_line()}`. Cube {nz}×{ny}×{nx} float32 (synthetic rotating disc, 1% NaN), "
        "CPU backend, product cache off, noise estimated by the server "
        f"(σ kernel rows: rms {RMS}); best of {report['repeat']} interleaved rounds. "
        f"Load average before {lb[0]:.2f}/{lb[1]:.2f}/{lb[2]:.2f}, after {la[0]:.2f}/{la[1]:.2f}/{la[2]:.2f} "
        "(shared 2-vCPU machine: compare the ratios, not the seconds).",
        "",
        machine_markdown(machine_description()),
        "",
        markdown_table(("request (HTTP in process)", "best", "÷ one request"), rows),
        "",
        markdown_table(("σ maps of orders 0-2, whole cube in memory", "best", "speed-up vs before"), krows),
        "",
        f"Checks: one request's maps identical to the single requests': {report['same_maps']}; σ maps identical: "
        f"{report['same_sigma']}; compiled σ maps equal to the two-pass formulas (rtol 1e-5): "
        f"{report['sigma_close']}; our moment 0 equals spectral-cube's where both are finite (rtol 1e-4): "
        f"{report['sc_mom0_close']}. "
        "spectral-cube computes no σ maps, so its row is maps only.",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256), metavar=("NZ", "NY", "NX"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", action="store_true", help=f"rewrite the '{HEADING}' section of bench/RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run(tuple(args.shape), args.repeat, Path(tmp))
    text = render(report)
    print(text)
    if args.write:
        replace_section(HEADING, text)


if __name__ == "__main__":
    main()

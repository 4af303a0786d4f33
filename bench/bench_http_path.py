"""End-to-end request latency of two checkouts of the server, interleaved in one run.

Run ``python -m bench.bench_http_path --other /path/to/old/checkout [--size 256] [--repeat 7]``.

Each checkout is driven in its own subprocess (its ``app`` package first on ``sys.path``) through
FastAPI's in-process test client with the product cache off, so every request runs the whole
path: validation, planning, dispatch, the kernels over the FITS memmap, encoding and the JSON
answer. Checkouts alternate per round so machine load hits both alike; each figure is the median
of the rounds. Used to check that the operation registry (issue 10) did not slow requests.
The compiled kernels' background warm-up is switched off (``VISIVO_COMPILED_WARMUP=0``): the
untimed first request of each kind loads them, so timings are of a warmed server, not of the
warm-up thread competing for the two cores.
Figures go to ``bench/RESULTS.md`` (section ``## Request path (issue 10)``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import command_line, machine_description, machine_markdown, markdown_table, replace_section

#: The requests timed: (label, path, body without dataset_id).
REQUESTS = [
    ("moment 0", "/v1/products/moment", {"order": 0}),
    ("moment 1", "/v1/products/moment", {"order": 1}),
    ("moment 8", "/v1/products/moment", {"order": 8}),
    ("moment 2 (casa)", "/v1/products/moment", {"order": 2, "convention": "casa"}),
    ("noise", "/v1/cube/noise", {}),
    ("slice z", "/v1/cube/slice", {"axis": "z", "index": 10}),
    ("pv (width 3)", "/v1/cube/pv", {"vertices": [[5, 5], [200, 180]], "width_pixels": 3}),
]

DRIVER = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, sys.argv[1])
from fastapi.testclient import TestClient
from app.main import create_app
from app.settings import Settings
work, cube_path, rounds = sys.argv[2], sys.argv[3], int(sys.argv[4])
requests = json.loads(sys.argv[5])
settings = Settings(token="b", token_file=f"{work}/tok", output_dir=f"{work}/out", data_roots=work, backend="cpu",
                    product_cache_capacity=0, workers=2, heavy_slots=1)
with TestClient(create_app(settings)) as client:
    client.headers["X-Visivo-Token"] = "b"
    opened = client.post("/v1/datasets/open", json={"path": cube_path}).json()
    headers = {"X-Visivo-Session": opened["session_id"]}
    times = {}
    for label, path, body in requests:
        payload = {**body, "dataset_id": opened["dataset_id"]}
        client.post(path, json=payload, headers=headers)  # warm
        best = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = client.post(path, json=payload, headers=headers)
            best.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json().get("valid") is True, r.text[:300]
        times[label] = min(best)
print(json.dumps(times))
"""


def _write_cube(path: Path, size: int) -> None:
    import numpy as np
    from astropy.io import fits

    rng = np.random.default_rng(1)
    nz = 128
    v = np.linspace(-200.0, 200.0, nz)[:, None, None]
    line = np.exp(-0.5 * ((v - rng.uniform(-50, 50, (size, size))) / 30.0) ** 2)
    cube = (line + rng.normal(0, 0.1, (nz, size, size))).astype(">f4")
    header = fits.Header()
    for key, value in {"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN", "CTYPE3": "VRAD", "CUNIT3": "km/s",
                       "CRVAL3": 0.0, "CDELT3": 400.0 / (nz - 1), "CRPIX3": (nz + 1) / 2, "CDELT1": -1e-3,
                       "CDELT2": 1e-3, "CRVAL1": 180.0, "CRVAL2": 10.0, "CRPIX1": size / 2, "CRPIX2": size / 2,
                       "BUNIT": "Jy/beam"}.items():
        header[key] = value
    fits.PrimaryHDU(cube, header).writeto(path, overwrite=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", type=Path, required=True, help="the checkout to compare with (e.g. before issue 10)")
    p.add_argument("--other-label", default="before")
    p.add_argument("--size", type=int, default=256, help="cube is size × size × 128 (default %(default)s)")
    p.add_argument("--repeat", type=int, default=5, help="requests per round, best kept (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds, median reported (default %(default)s)")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = {"this checkout": here, args.other_label: args.other.resolve()}
    results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory() as work:
        cube = Path(work) / "cube.fits"
        _write_cube(cube, args.size)
        for _ in range(args.rounds):
            for name, tree in trees.items():
                out = subprocess.run([sys.executable, "-c", DRIVER, str(tree), work, str(cube), str(args.repeat),
                                      json.dumps(REQUESTS)], capture_output=True, text=True, check=True, cwd=tree,
                                     env={**os.environ, "VISIVO_COMPILED_WARMUP": "0"})
                for label, seconds in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    results[name].setdefault(label, []).append(seconds)
    rows = []
    for label, _, _ in REQUESTS:
        new = statistics.median(results["this checkout"][label])
        old = statistics.median(results[args.other_label][label])
        rows.append([label, f"{old * 1e3:.1f} ms", f"{new * 1e3:.1f} ms", f"{new / old:.2f}"])
    table = markdown_table([f"request ({args.size}×{args.size}×128 float32 FITS)", args.other_label,
                            "this checkout", "ratio"], rows)
    print(table)
    if not args.no_write:
        body = (f"{machine_markdown(machine_description())}\n\nCommand: `{command_line()}`\n\n"
                f"Median over {args.rounds} alternating rounds of the best of {args.repeat} requests "
                "(product cache off; in-process test client; compiled-kernel warm-up off, first request untimed).\n\n"
                f"{table}\n")
        replace_section("Request path (issue 10)", body)


if __name__ == "__main__":
    main()

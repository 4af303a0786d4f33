"""Peak RSS of the issue-12 memory cases against the per-request budget.

Each case runs the real application (``create_app`` + TestClient, CPU backend) in a fresh
interpreter that reads ``/proc/self/status``: ``VmHWM`` (peak RSS) is reset to the current RSS
through ``/proc/self/clear_refs`` before each request, so "peak growth" is the request's own.

- **isosurface:** a 512×512×256 float32 noise cube (256 MiB), threshold 0 (~2·10⁸ triangles,
  issue 12 item 1: 73 s and 11.9 GB before), then threshold 2.5 (a mesh under the cap).
- **gzip:** a 1024×1024×512 float32 cube of zeros as ``.fits.gz`` (2 GiB inflated, ~2 MB on
  disk, issue 12 item 2: 4.4 GB per open before), opened three times, then JS9 ``imstat`` over
  the whole cube (refused by the budget) and over a 64×64-pixel box through all channels.

``python -m bench.bench_limits`` (Linux only; ~4 GiB of scratch disk under ``$TMPDIR``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from bench.common import command_line, machine_description, machine_markdown, markdown_table, replace_section

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MB = 2048

_RUNNER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from fastapi.testclient import TestClient
    from app.main import create_app
    from app.settings import Settings

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    tmp, name, budget, calls = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    settings = Settings(token="t" * 24, token_file=tmp / "token", output_dir=tmp / "out", data_roots=str(tmp),
                        backend="cpu", memory_budget_mb=budget)
    rows = []
    with TestClient(create_app(settings)) as client:
        client.headers["X-Visivo-Token"] = "t" * 24
        ds = None
        for label, route, body in calls:
            if ds is not None:
                body = {**body, "dataset_id": ds["dataset_id"]}
            open("/proc/self/clear_refs", "w").write("5")
            base, t0 = status("VmRSS"), time.perf_counter()
            answer = client.post(route, json=body, headers={"X-Visivo-Session": ds["session_id"]} if ds else {})
            seconds = time.perf_counter() - t0
            data = answer.json()
            if route == "/v1/datasets/open":
                ds = data
            text = data.get("error") or data.get("detail") or ""
            if "result" in data:
                text = "npts=%d" % data["result"]["DATA"]["npts"]
            if "num_polys" in data:
                text = "%d triangles" % data["num_polys"]
            rows.append([label, answer.status_code, round(seconds, 2), (status("VmHWM") - base) / 2**20, text[:110]])
    print(json.dumps(rows))
""")


def _run(tmp: Path, name: str, calls: list) -> list:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _RUNNER, str(tmp), name, str(BUDGET_MB), json.dumps(calls)],
                         capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from tests.api.conftest import write_cube
    from tests.test_gzip_memory import write_zero_cube_gz

    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        rng = np.random.default_rng(12)
        write_cube(tmp / "noise.fits", rng.normal(size=(256, 512, 512)).astype(np.float32))
        iso = "/v1/products/isosurface"
        rows += [["isosurface 512×512×256", *r] for r in _run(tmp, "noise.fits", [
            ["open", "/v1/datasets/open", {"path": "noise.fits"}],
            ["threshold 0", iso, {"threshold": 0.0}],
            ["threshold 2.5", iso, {"threshold": 2.5}]])]
        inflated = write_zero_cube_gz(tmp / "zeros.fits.gz", (512, 1024, 1024), bitpix=-32)
        gz_mb = (tmp / "zeros.fits.gz").stat().st_size / 2**20
        js9 = "/api/visualization/js9/analysis"
        box = {"shape": "box", "x": 500.5, "y": 300.5, "width": 64, "height": 64}
        rows += [[f"gzip {gz_mb:.1f} MiB → {inflated / 2**30:.1f} GiB", *r] for r in _run(tmp, "zeros.fits.gz", [
            ["open 1 (inflates to disk)", "/v1/datasets/open", {"path": "zeros.fits.gz"}],
            ["open 2", "/v1/datasets/open", {"path": "zeros.fits.gz"}],
            ["open 3", "/v1/datasets/open", {"path": "zeros.fits.gz"}],
            ["JS9 imstat, whole cube", js9, {"task": "imstat", "image_path": "zeros.fits.gz"}],
            ["JS9 imstat, 64×64 box × 512 channels", js9,
             {"task": "imstat", "image_path": "zeros.fits.gz", "region": box}]])]
    table = markdown_table(["case", "request", "HTTP", "seconds", "peak RSS growth (MiB)", "answer"],
                           [[r[0], r[1], r[2], f"{r[3]:.2f}", f"{r[4]:.0f}", r[5]] for r in rows])
    body = (f"Command: `{command_line()}`\n\n{machine_markdown(machine_description())}\n\n"
            f"Per-request memory budget {BUDGET_MB} MiB (`VISIVO_MEMORY_BUDGET_MB`); CPU backend; each case in a "
            "fresh process, peak RSS growth = `VmHWM` after the request − `VmRSS` before it (reset through "
            "`/proc/self/clear_refs`).\n\n" + table + "\n")
    print(body)
    replace_section("Limits: peak RSS of the issue-12 memory cases", body)


if __name__ == "__main__":
    main()

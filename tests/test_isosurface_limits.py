"""Issue 12 item 1: the isosurface counts its triangles before building vertices.

The count is checked against scikit-image's mesh (the reference) on every single-cell case and
on random cubes with blanks; the service test runs in a fresh interpreter and reads its peak RSS
from ``/proc/self/status`` (``VmHWM`` after ``clear_refs``), so a too-large mesh is refused within
the memory budget instead of being built first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from skimage.measure import marching_cubes

from cpu_fallback import isosurface as iso
from tests.api.conftest import write_cube

ROOT = Path(__file__).resolve().parents[1]
_CORNERS = [(0, 0, 0), (1, 0, 0), (1, 1, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)]


def _skimage_faces(vol: np.ndarray, level: float, step: int = 1) -> int:
    try:
        return len(marching_cubes(vol, level=level, step_size=step, method="lorensen")[1])
    except (RuntimeError, ValueError):  # no surface / level outside the data
        return 0


def test_every_single_cell_case_matches_scikit_image() -> None:
    for case in range(256):
        vol = np.zeros((2, 2, 2), dtype=np.float32)
        for bit, corner in enumerate(_CORNERS):
            if case >> bit & 1:
                vol[corner] = 1.0
        assert iso.isosurface_triangle_count(vol, level=0.5) == _skimage_faces(vol, 0.5), case


@pytest.mark.parametrize("seed", range(6))
def test_count_equals_mesh_on_random_cubes_with_blanks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 19, 3))
    vol = rng.normal(size=shape).astype(np.float32)
    clean = vol.copy()
    vol[rng.random(shape) < 0.15] = np.nan
    vol[rng.random(shape) < 0.03] = np.inf
    vol[rng.random(shape) < 0.03] = -np.inf
    for step in (1, 2, 3):
        level = float(rng.normal(scale=0.5))
        verts, faces = iso.isosurface_mesh(vol, level=level, step=step)
        assert iso.isosurface_triangle_count(vol, level=level, step=step) == len(faces)
        assert iso.isosurface_triangle_count(clean, level=level, step=step) == _skimage_faces(clean, level, step)


def test_count_is_chunked_and_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    z, y, x = np.mgrid[:30, :33, :35].astype(np.float32)
    sphere = 12.5 - np.sqrt((x - 17.2) ** 2 + (y - 16.1) ** 2 + (z - 14.7) ** 2)
    whole = iso.isosurface_triangle_count(sphere, level=0.0)
    monkeypatch.setattr(iso, "_COUNT_CELLS", 40)  # one plane of cells per slab
    assert iso.isosurface_triangle_count(sphere, level=0.0) == whole == _skimage_faces(sphere, 0.0)


_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from fastapi.testclient import TestClient
    from app.main import create_app
    from app.settings import Settings

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    tmp, cube, budget = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    settings = Settings(token="t" * 24, token_file=tmp / "token", output_dir=tmp / "out", data_roots=str(tmp),
                        backend="cpu", workers=2, heavy_slots=1, memory_budget_mb=budget, chunk_megabytes=16)
    with TestClient(create_app(settings)) as client:
        client.headers["X-Visivo-Token"] = "t" * 24
        opened = client.post("/v1/datasets/open", json={"path": cube}).json()
        ds = opened["dataset_id"]
        client.headers["X-Visivo-Session"] = opened["session_id"]
        out = []
        for threshold, step in ((0.0, 1), (0.0, 2), (2.5, 1)):
            open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
            base, t0 = status("VmRSS"), time.perf_counter()
            body = client.post("/v1/products/isosurface",
                               json={"dataset_id": ds, "threshold": threshold, "step": step}).json()
            out.append({"valid": body["valid"], "error": body["error"], "num_polys": body.get("num_polys"),
                        "peak_growth": status("VmHWM") - base, "seconds": time.perf_counter() - t0})
    print(json.dumps(out))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_too_large_mesh_refused_within_budget(tmp_path: Path) -> None:
    """Threshold 0 on noise: 2.6·10⁷ triangles (built first before: +1.5 GB RSS, 28 s); now refused in budget."""
    rng = np.random.default_rng(12)
    data = rng.normal(size=(128, 256, 256)).astype(np.float32)
    write_cube(tmp_path / "noise.fits", data)
    expected = iso.isosurface_triangle_count(data, level=0.0)
    expected_step2 = iso.isosurface_triangle_count(data, level=0.0, step=2)
    small = iso.isosurface_triangle_count(data, level=2.5)
    assert expected > 5_000_000 and 0 < small < 5_000_000 and expected_step2 < 5_000_000
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("VISIVO_")}, "PYTHONPATH": str(ROOT)}
    budget_mb = 256
    run = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path), "noise.fits", str(budget_mb)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    too_large, by_budget, ok = json.loads(run.stdout.strip().splitlines()[-1])
    assert not too_large["valid"]
    assert too_large["error"] == (f"Isosurface mesh too large ({expected} triangles > 5000000); "
                                  "use a larger step or a higher threshold.")
    assert too_large["peak_growth"] < budget_mb << 20, too_large
    # step 2: under the triangle cap, but 128 B per triangle pass the 256 MiB budget -> refused before building
    assert not by_budget["valid"] and "over the per-request memory budget of 256.0 MiB" in by_budget["error"]
    assert f"An isosurface of {expected_step2} triangles" in by_budget["error"]
    assert by_budget["peak_growth"] < budget_mb << 20, by_budget
    assert ok["valid"] and ok["num_polys"] == small == _skimage_faces(data, 2.5)
    assert ok["peak_growth"] < budget_mb << 20, ok

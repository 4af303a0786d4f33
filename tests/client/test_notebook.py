"""The worked notebook ``examples/quickstart.ipynb`` runs against the live server, and its numbers are the server's."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from tests.client.conftest import CUBE, IMAGE, REPO
from tests.client.refs import wire

NOTEBOOK = REPO / "examples" / "quickstart.ipynb"

#: Appended for the test only: draw every figure (the Agg backend shows nothing, so render them here).
DRAW_FIGURES = """import matplotlib.pyplot as plt
drawn = 0
for number in plt.get_fignums():
    plt.figure(number).canvas.draw()
    drawn += 1
print(json.dumps({"figures_drawn": drawn}))"""


def _json_output(cell) -> dict:
    text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    return json.loads(text.strip().splitlines()[-1])


def test_quickstart_notebook_executes(live_server, raw_for, monkeypatch, tmp_path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(cell.get("outputs", []) == [] for cell in notebook.cells if cell.cell_type == "code")
    notebook.cells.append(nbformat.v4.new_code_cell(DRAW_FIGURES))
    monkeypatch.setenv("VISIVO_URL", live_server.url)
    monkeypatch.setenv("VISIVO_TOKEN", live_server.token)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    summary_cell = next(c for c in notebook.cells if "summary" in c.metadata.get("tags", []))
    summary = _json_output(summary_cell)
    assert _json_output(notebook.cells[-1])["figures_drawn"] == 4  # moments (two panels), PV, line width, 3C 273

    raw = raw_for()
    ds = raw.post("/v1/datasets/open", {"path": CUBE})
    raw.http.headers["X-Visivo-Session"] = ds["session_id"]
    body = {"dataset_id": ds["dataset_id"], "channel_start": 5, "channel_end": 50}
    mom0 = raw.post("/v1/products/moment", {**body, "order": 0})
    assert summary["mom0_max"] == pytest.approx(mom0["range_max"], rel=1e-7)
    sigma = float(np.median(raw.post("/v1/cube/noise", {"dataset_id": ds["dataset_id"], "channel_start": 0,
                                                         "channel_end": 4})["sigma"]))
    mom1 = raw.post("/v1/products/moment", {**body, "order": 1, "threshold": 4 * sigma})
    assert summary["mom1_pixels"] == int(np.isfinite(wire(mom1["data_base64"])).sum()) > 300
    pv = raw.post("/v1/cube/pv", {"dataset_id": ds["dataset_id"], "vertices": summary["pv_path"], "width_pixels": 3})
    assert summary["pv_shape"] == [pv["rows"], pv["cols"]] and pv["rows"] == 56
    fwhm = raw.post("/v1/spectral/linewidth", body)
    galaxy = np.where(np.isfinite(wire(mom1["data_base64"])), wire(fwhm["fwhm_base64"]), np.nan)
    assert summary["linewidth_median"] == pytest.approx(float(np.nanmedian(galaxy)), rel=1e-6)
    stats = raw.post("/api/visualization/js9/analysis", {
        "task": "imstat", "image_path": IMAGE, "region": {"shape": "circle", "x": 129, "y": 129, "r": 20}})
    assert summary["imstat_npts"] == stats["result"]["DATA"]["npts"] == 1257
    assert summary["imstat_sum"] == pytest.approx(stats["result"]["DATA"]["sum"], rel=1e-12)

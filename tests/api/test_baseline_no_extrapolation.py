"""Baseline never extrapolates (issue 11, item 6): per-spectrum fallback orders, outcome counts,
HISTORY with the line-free ranges used. Reference: the input cube itself (its range and noise)
and hand-computed spectra."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.io import fits
from fastapi.testclient import TestClient

from app.services.channel_ranges import format_ranges
from cpu_fallback import baseline as bl
from kernel_common.baseline_model import outcome_counts
from tests.api.conftest import open_dataset


def test_ngc5921_edge_pixels_stay_within_the_input_range(client: TestClient, ngc5921: Path) -> None:
    body = open_dataset(client, ngc5921)
    sid, ds = body["session_id"], body["dataset_id"]
    req = {"session_id": sid, "dataset_id": ds, "poly_order": 1, "method": "polynomial",
           "line_free_channels": [[0, 4], [51, 55]]}
    res = client.post(f"/v1/spectral/baseline/{sid}/{ds}", json=req).json()
    assert res["valid"], res
    data = np.squeeze(fits.getdata(ngc5921)).astype(np.float64)
    sigma = float(np.nanstd(np.concatenate([data[0:5], data[51:56]])))  # ~1.9 mJy/beam
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    out = fits.getdata(res["output_path"]).astype(np.float64)
    assert np.nanmin(out) >= lo - 5 * sigma and np.nanmax(out) <= hi + 5 * sigma  # was -0.0646 vs -0.0108
    assert res["range_min"] >= lo - 5 * sigma
    counts = res["pixels_by_outcome"]
    assert set(counts) == {"order_1", "order_0", "unchanged"}
    assert sum(counts.values()) == data.shape[1] * data.shape[2]
    # spectra whose finite channels outrun their usable line-free ones (NaN at channels 45-55 near the
    # primary-beam edge) are fitted by a constant, not a line through channels 0-4
    fin = np.isfinite(data)
    c = np.arange(data.shape[0])[:, None, None]
    last = np.where(fin, c, -1).max(axis=0)
    usable_hi = np.where(fin[51:56], c[51:56], -1).max(axis=0)
    usable_n = fin[0:5].sum(axis=0) + fin[51:56].sum(axis=0)
    expected_const = ((usable_hi < last) & (usable_n >= 2)).sum()
    assert expected_const >= 11 and counts["order_0"] == expected_const
    history = " ".join(str(h) for h in fits.getheader(res["output_path"])["HISTORY"])
    assert "line-free 0..4,51..55 (10 channels)" in history


def test_fallback_rules_hand_computed() -> None:
    z = np.arange(20, dtype=np.float64)
    cube = np.zeros((20, 1, 4), dtype=np.float32)
    slope = (0.5 + 0.1 * z).astype(np.float32)
    cube[:, 0, :] = slope[:, None]
    lf = np.r_[0:4, 16:20]
    cube[14:, 0, 1] = np.nan  # usable line-free 0..3 only; finite channels 0..13: not bracketed
    cube[[0, 1, 2, 16, 17, 18], 0, 2] = np.nan  # usable line-free: 3 and 19 only
    cube[[0, 1, 2, 3, 16, 17, 18], 0, 3] = np.nan  # 1 usable sample: unchanged
    res, part = bl.subtract_baseline(cube, lf, order=1)
    np.testing.assert_allclose(res[:, 0, 0], 0.0, atol=1e-6)  # order 1 brackets: exact
    np.testing.assert_allclose(res[:14, 0, 1], slope[:14] - slope[:4].astype(np.float64).mean(), atol=1e-6)
    # pixel 2: finite channels 3..19 bracketed by usable 3 and 19, but 2 samples < order + 2 -> order 0
    const2 = (slope[3] + slope[19]) / 2.0
    fin2 = np.isfinite(cube[:, 0, 2])
    np.testing.assert_allclose(res[fin2, 0, 2], slope[fin2] - const2, atol=1e-6)
    fin3 = np.isfinite(cube[:, 0, 3])
    np.testing.assert_array_equal(res[fin3, 0, 3], cube[fin3, 0, 3])  # unchanged
    assert outcome_counts(part, 1, "polynomial") == {"order_1": 1, "order_0": 2, "unchanged": 1}


def test_format_ranges() -> None:
    assert format_ranges([5, 0, 1, 2, 3, 4, 51, 52, 53, 7]) == "0..5,7,51..53"
    assert format_ranges([]) == ""

"""Baseline route on the compiled CPU path: it is the path taken, and its product equals the NumPy oracle's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from cpu_fallback.compiled import baseline as compiled_baseline
from tests.api.conftest import TOKEN, open_dataset


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The app without a product cache: the second (oracle) request computes its own product."""
    with TestClient(create_app(settings.model_copy(update={"product_cache_capacity": 0}))) as test_client:
        test_client.headers.update({"X-Visivo-Token": TOKEN})
        yield test_client


@pytest.mark.parametrize(("order", "method"), [(1, "polynomial"), (3, "polynomial"), (0, "median")])
def test_route_compiled_equals_oracle(client: TestClient, ngc5921: Path, monkeypatch: pytest.MonkeyPatch,
                                      order: int, method: str) -> None:
    calls = []
    real = compiled_baseline.subtract_baseline_raw
    monkeypatch.setattr(compiled_baseline, "subtract_baseline_raw", lambda *a, **k: calls.append(1) or real(*a, **k))
    body = open_dataset(client, ngc5921)
    sid, ds = body["session_id"], body["dataset_id"]
    req = {"session_id": sid, "dataset_id": ds, "poly_order": order, "method": method,
           "line_free_channels": [[0, 4], [51, 55]], "channel_start": 0, "channel_end": 55}
    fast = client.post(f"/v1/spectral/baseline/{sid}/{ds}", json=req).json()
    assert fast["valid"], fast
    assert calls, "the CPU job did not take the compiled path"
    slabs = len(calls)
    monkeypatch.setenv("VISIVO_COMPILED", "0")
    slow = client.post(f"/v1/spectral/baseline/{sid}/{ds}", json=req).json()
    assert slow["valid"] and len(calls) == slabs  # the oracle ran: no second compiled call
    assert slow["output_path"] != fast["output_path"]  # a product of its own, not a cache hit
    assert fast["pixels_by_outcome"] == slow["pixels_by_outcome"]
    assert fast["rms_before"] == pytest.approx(slow["rms_before"], rel=1e-10)
    assert fast["rms_after"] == pytest.approx(slow["rms_after"], rel=1e-10)
    a = fits.getdata(fast["output_path"]).astype(np.float64)
    b = fits.getdata(slow["output_path"]).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    scale = np.nanmax(np.abs(b))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)
    assert fast["range_min"] == np.nanmin(a) and fast["range_max"] == np.nanmax(a)
    assert slow["range_min"] == pytest.approx(fast["range_min"], abs=1e-6 * scale)

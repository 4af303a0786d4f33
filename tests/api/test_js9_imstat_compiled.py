"""JS9 ``imstat`` on the compiled CPU path: it is the path taken, and it answers what the NumPy oracle does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.settings import Settings
from cpu_fallback import stats as oracle_stats
from cpu_fallback.compiled import stats as compiled_stats
from tests.api.conftest import TOKEN
from tests.api.js9_support import analyse, cube, js9_app

ORDER_KEYS = ("npts", "min", "max", "median", "q1", "q3", "quartile", "medabsdevmed", "minpos", "maxpos", "blc", "trc")


@pytest.fixture
def js9_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(js9_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        yield client


@pytest.mark.parametrize(("region", "chans"), [(None, None), ({"shape": "circle", "x": 129, "y": 129, "r": 60}, "5~40"),
                                               ({"shape": "box", "x": 100.5, "y": 150.5, "width": 40, "height": 20,
                                                 "angle": 25}, "30")])
def test_compiled_route_equals_the_oracle(js9_client: TestClient, ngc5921: Path, monkeypatch: pytest.MonkeyPatch,
                                          region: dict | None, chans: str | None) -> None:
    calls = []
    real = compiled_stats.region_stats_raw
    monkeypatch.setattr(compiled_stats, "region_stats_raw", lambda *a, **k: calls.append(1) or real(*a, **k))
    params = {"chans": chans} if chans else {}
    fast = analyse(js9_client, "imstat", ngc5921, region, params)["result"]["DATA"]
    assert calls, "the CPU job did not take the compiled path"
    monkeypatch.setenv("VISIVO_COMPILED", "0")
    oracle_calls = []
    real_final = oracle_stats.stats_finalize
    monkeypatch.setattr(oracle_stats, "stats_finalize", lambda p: oracle_calls.append(1) or real_final(p))
    slow = analyse(js9_client, "imstat", ngc5921, region, {**params, "x": 1})["result"]["DATA"]  # no cache hit
    assert len(calls) == 1 and oracle_calls == [1]
    for key in ORDER_KEYS:
        assert fast[key] == slow[key], key
    for key in ("sum", "sumsq", "mean", "sigma", "std", "rms", "flux"):
        assert fast[key] == pytest.approx(slow[key], rel=1e-12, abs=1e-12), key
    assert fast["flux_unit"] == slow["flux_unit"]
    if region is None:  # and both against a brute-force sort of the whole cube
        values = cube(ngc5921)
        v = np.sort(values[np.isfinite(values)].astype(np.float64))
        med = 0.5 * (v[(v.size - 1) // 2] + v[v.size // 2])
        dev = np.sort(np.abs(v - med))
        assert fast["npts"] == v.size and fast["median"] == med
        assert fast["medabsdevmed"] == 0.5 * (dev[(v.size - 1) // 2] + dev[v.size // 2])
        assert fast["sum"] == pytest.approx(v.sum(), rel=1e-12)

"""Issue 11, finding 10 (server side): imview's default contour levels trace faint structure.

Default: logarithmic from 3·σ (σ = 1.4826·MAD of the smoothed plane, astropy ``mad_std`` as the
reference) to the peak. On 3C 273 the lowest default contour reaches the tip of the jet, ~52 px
from the core, where the old linear default (min…max in 10 steps) stays within 7 px of the core.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.stats import mad_std
from fastapi.testclient import TestClient
from scipy.ndimage import gaussian_filter

from app.settings import Settings
from tests.api.conftest import TOKEN
from tests.api.js9_support import analyse, decompress_demo, js9_app, plane

C3 = "3c273_continuum.fits.gz"

JET_TIP = (164.0, 90.0)  # 1-based JS9 pixel of the far end of the 3C 273 jet above 5 sigma
CORE = (129.0, 129.0)


@pytest.fixture
def js9_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(js9_app(settings)) as client:
        client.headers.update({"X-Visivo-Token": TOKEN})
        yield client


@pytest.fixture
def c3_file(data_dir: Path) -> Path:
    return decompress_demo("3c273_continuum.fits", data_dir)


def _nearest(result: dict, level_index: int, point: tuple[float, float]) -> float:
    best = np.inf
    for path in result["contour_paths"][level_index]["paths"]:
        d = np.hypot(np.asarray(path["x"]) - point[0], np.asarray(path["y"]) - point[1])
        best = min(best, float(d.min()))
    return best


def _farthest_from_core(result: dict, level_index: int) -> float:
    far = 0.0
    for path in result["contour_paths"][level_index]["paths"]:
        far = max(far, float(np.hypot(np.asarray(path["x"]) - CORE[0], np.asarray(path["y"]) - CORE[1]).max()))
    return far


def test_default_levels_are_logarithmic_from_three_sigma(js9_client: TestClient, c3_file: Path) -> None:
    result = analyse(js9_client, "imview", C3)["result"]
    smoothed = gaussian_filter(plane(c3_file).astype(np.float64), 1.0)
    sigma = float(mad_std(smoothed))
    levels = np.asarray(result["contour_levels"])
    assert result["level_scale"] == "log" and result["noise_multiple"] == 3.0
    # 1.4826·MAD (the documented constant) vs astropy's 1/Φ⁻¹(3/4) = 1.482602…: 1.5e-6 apart
    assert result["noise_sigma"] == pytest.approx(sigma, rel=2e-6)
    assert levels.size == 10
    assert levels[0] == pytest.approx(3.0 * sigma, rel=2e-6)
    ratios = levels[1:] / levels[:-1]
    np.testing.assert_allclose(ratios, (smoothed.max() / levels[0]) ** 0.1, rtol=1e-9)
    assert levels[-1] < smoothed.max()


def test_default_contours_reach_the_jet(js9_client: TestClient) -> None:
    result = analyse(js9_client, "imview", C3)["result"]
    assert _nearest(result, 0, JET_TIP) < 4.0  # the lowest level traces the jet to its tip
    linear = analyse(js9_client, "imview", C3, parameters={"level_scale": "linear"})["result"]
    assert linear["level_scale"] == "linear" and linear["noise_sigma"] is None
    assert _farthest_from_core(linear, 0) < 10.0  # the old default: every level on the core


def test_options_and_fallbacks(js9_client: TestClient) -> None:
    five = analyse(js9_client, "imview", C3, parameters={"noise_multiple": 5, "n_levels": 4})["result"]
    assert len(five["contour_levels"]) == 4
    assert five["contour_levels"][0] == pytest.approx(5.0 / 3.0 * analyse(
        js9_client, "imview", C3)["result"]["contour_levels"][0], rel=1e-9)
    explicit = analyse(js9_client, "imview", C3, parameters={"levels": [0.1, 1.0]})["result"]
    assert explicit["level_scale"] == "explicit" and explicit["contour_levels"] == [0.1, 1.0]
    bad = analyse(js9_client, "imview", C3, parameters={"level_scale": "cubic"}, expect=400)
    assert bad["detail"].startswith("Invalid parameter 'level_scale'")
    # nothing above k·σ: the linear rule, said so
    flat = analyse(js9_client, "imview", C3, parameters={"noise_multiple": 1e5})["result"]
    assert flat["level_scale"] == "linear" and len(flat["contour_levels"]) == 10


def test_log_levels_unit() -> None:
    from app.services.js9.contour_levels import log_levels, robust_sigma

    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 2.0, 200_000)
    assert robust_sigma(noise) == pytest.approx(2.0, rel=0.01)
    image = noise.copy()
    image[0] = 600.0
    levels, sigma = log_levels(image, n_levels=4, noise_multiple=3.0)
    assert sigma == pytest.approx(1.4826 * float(np.median(np.abs(image - np.median(image)))), rel=1e-12)
    assert sigma == pytest.approx(float(mad_std(image)), rel=2e-6)
    lo = 3.0 * sigma
    np.testing.assert_allclose(levels, [lo * (600.0 / lo) ** (i / 4) for i in range(4)], rtol=1e-12)
    assert log_levels(np.zeros(10), n_levels=3, noise_multiple=3.0) is None

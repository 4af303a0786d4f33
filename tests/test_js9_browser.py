"""The JS9 viewer in a real browser: headless Chromium (Debian's ``/usr/bin/chromium``) driven by
Playwright opens ``/js9/`` on a live server, loads the 3C 273 image, draws a circle region, runs
imstat through the page and checks the number shown; then draws contours. Screenshots of the
page are saved as ``test-artifacts/js9_viewer_imstat.png`` and ``test-artifacts/js9_viewer.png``.

Skipped, with the reason, when Playwright, Chromium or the JS9 installation
(``scripts/install_js9.sh``) is missing.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token-0123456789"


def _skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright (Python package) is not installed"
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    from app.routers.js9 import js9_installed

    if not js9_installed():
        return "JS9 is not installed in app/static/vendor/js9 (run scripts/install_js9.sh)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """The application (with the JS9 router) served by uvicorn on a free local port, in a thread."""
    from app.settings import Settings
    from tests.api.js9_support import js9_app
    from tests.live_server import serve

    settings = Settings(token=TOKEN, token_file=tmp_path / "token", output_dir=tmp_path / "out", backend="cpu",
                        workers=2, heavy_slots=1)
    with serve(js9_app(settings)) as url:
        yield url


def _expected_mean() -> float:
    """Mean of the 3C 273 pixels whose centres lie within 10 px of JS9 pixel (129, 129)."""
    import gzip

    from astropy.io import fits

    from app.settings import DEMO_DATA_ROOT

    with gzip.open(DEMO_DATA_ROOT / "3c273_continuum.fits.gz", "rb") as handle, fits.open(handle) as hdul:
        data = np.asarray(hdul[0].data, dtype=np.float32)
    yy, xx = np.mgrid[0:256, 0:256]
    mask = (xx - 128) ** 2 + (yy - 128) ** 2 <= 100
    return float(data[mask].astype(np.float64).mean())


def test_viewer_runs_imstat_on_a_circle(live_server: str) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{live_server}/js9/#token={TOKEN}&file=3c273_continuum.fits.gz")
            assert "token" not in page.url  # the token leaves the address bar at once
            page.wait_for_function("document.body.dataset.imageLoaded === 'true'", timeout=30_000)
            page.evaluate("JS9.AddRegions({shape: 'circle', x: 129, y: 129, radius: 10})")
            page.select_option("#task-select", "imstat")
            page.click("#run-button")
            page.wait_for_function("['done', 'error'].includes(document.body.dataset.runState)", timeout=30_000)
            assert page.evaluate("document.body.dataset.runState") == "done", page.inner_text("#run-state")
            shown = float(page.get_attribute("#stat-mean", "data-value"))
            assert shown == pytest.approx(_expected_mean(), rel=1e-12)
            assert page.inner_text("#stat-npts") == "317"
            assert math.isclose(float(page.inner_text("#stat-mean")), shown, rel_tol=1e-6)
            page.screenshot(path=str(ARTIFACTS / "js9_viewer_imstat.png"), full_page=True)
            # contours of the whole image, drawn as a JS9 shape layer
            page.click("#clear-regions")
            page.select_option("#task-select", "imview")
            page.fill("#imview-explicit", "0.03, 0.1, 0.3, 1, 3, 10")
            page.click("#run-button")
            page.wait_for_function("document.body.dataset.runState === 'done' && document.body.dataset.contours",
                                   timeout=30_000)
            assert int(page.evaluate("(JS9.GetShapes('casa-contours') || []).length")) > 0
            page.screenshot(path=str(ARTIFACTS / "js9_viewer.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors

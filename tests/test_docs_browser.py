"""The browsable API in a real browser (issue 10): ``/docs`` loads offline in headless Chromium, lists
every route of the schema, and "Try it out" on ``/v1/health`` with the token answers 200.

The page is loaded with every request to a host other than the test server aborted, so a CDN
reference would fail the test. A screenshot is saved as ``test-artifacts/api_docs.png``.
Skipped, with the reason, when Playwright or Chromium is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "docs-test-token-0123456789"


def _skip_reason() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "playwright (Python package) is not installed"
    if not CHROMIUM.exists():
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[str]:
    """The application served by uvicorn on a free loopback port, in a thread."""
    from app.main import create_app
    from app.settings import Settings
    from tests.live_server import serve

    settings = Settings(token=TOKEN, token_file=tmp_path / "token", output_dir=tmp_path / "out", backend="cpu",
                        workers=2, heavy_slots=1)
    with serve(create_app(settings)) as url:
        yield url


def test_docs_page_lists_every_route_and_tries_health(live_server: str) -> None:
    import httpx
    from playwright.sync_api import sync_playwright

    schema = httpx.get(f"{live_server}/openapi.json", timeout=10).json()
    operations = [(method.upper(), path) for path, item in schema["paths"].items() for method in item]
    assert len(operations) > 40
    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})

            def only_local(route) -> None:  # noqa: ANN001
                if route.request.url.startswith(live_server):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.goto(f"{live_server}/docs")
            page.wait_for_selector(".opblock", timeout=30_000)
            shown = page.eval_on_selector_all(
                ".opblock", "els => els.map(e => [e.querySelector('.opblock-summary-method').textContent.trim(),"
                            " e.querySelector('.opblock-summary-path').getAttribute('data-path')])")
            assert sorted(map(tuple, shown)) == sorted(operations)
            assert not outside, f"the docs page reached outside the server: {outside}"

            page.click("button.authorize")
            token_box = page.locator(".auth-container", has_text="VisivoToken")
            token_box.locator("input").fill(TOKEN)
            token_box.locator("button.authorize").click()
            page.click("button.btn-done")

            health = page.locator(".opblock", has=page.locator('[data-path="/v1/health"]'))
            health.locator(".opblock-summary").click()
            health.locator("button.try-out__btn").click()
            health.locator("button.execute").click()
            status = health.locator(".live-responses-table tbody .response-col_status").first
            status.wait_for(timeout=30_000)
            assert status.text_content().strip() == "200"
            body = health.locator(".live-responses-table .microlight").first.text_content()
            assert '"valid": true' in body and '"backend": "cpu"' in body
            page.screenshot(path=str(ARTIFACTS / "api_docs.png"), full_page=False)
        finally:
            browser.close()


def test_redoc_page_loads_offline(live_server: str) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def only_local(route) -> None:  # noqa: ANN001
                if route.request.url.startswith(live_server):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.goto(f"{live_server}/redoc")
            page.get_by_text("/v1/products/moment").first.wait_for(state="attached", timeout=30_000)
            assert not outside, f"the ReDoc page reached outside the server: {outside}"
        finally:
            browser.close()

"""A real browser: Playwright driving Debian's headless Chromium against a live store process (ASGI)."""

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import require
from tests.live import store_server

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture
def live_store(transactional_db, tiny_hf_dir, tmp_path):
    from apps.catalog.services import store_seed
    from apps.registry.services import model_version_register

    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    store_seed()
    with store_server(log_path=tmp_path / "store.log", INFERENCE_DTYPE="float32", INFERENCE_QUANTIZE="none") as url:
        yield url


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop in this thread; the test's own database calls (set-up and
    # flush) are plain synchronous ones, which Django would otherwise refuse next to a running loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    chromium = shutil.which("chromium")
    require(chromium is not None, "Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=FLAGS)
        yield b
        b.close()


# Injected by the browser before any page script (it is not the page's own, so the policy does not apply to it):
# every Content-Security-Policy violation of the page is kept, for `csp_violations`.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(e.violatedDirective + " blocked " + (e.blockedURI || "inline") + " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


def watched_context(browser, live_store, **options):
    """A browser context whose pages record console errors (`page.console_errors`) and policy violations."""
    context = browser.new_context(base_url=live_store, **options)
    context.add_init_script(WATCH_CSP)
    return context


def watch(page):
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
    return page


def csp_violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations || []")


@pytest.fixture
def page(browser, live_store):
    context = watched_context(browser, live_store, viewport={"width": 1280, "height": 900})
    page = watch(context.new_page())
    page.external_requests = []
    page.dialogs = []
    page.on("request", lambda r: None if r.url.startswith(live_store) or r.url.startswith("data:") else page.external_requests.append(r.url))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    context.close()


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

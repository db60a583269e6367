"""Under the Content-Security-Policy, in headless Chromium: the Swagger UI still works, and the behaviour that the
templates once wrote inline (confirm before deleting, copy the link to share) works from static/js."""

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import csp_violations, screenshot, watch, watched_context
from tests.browser.test_store_flow import sign_up

pytestmark = pytest.mark.slow


def test_the_swagger_ui_works_under_the_policy(page):
    response = page.goto("/api/docs/")
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    expect(page.get_by_role("heading", name="GPT Store API")).to_be_visible(timeout=30_000)
    expect(page.locator(".opblock").first).to_be_visible()  # the operations, read from /api/schema/
    page.locator(".opblock-summary", has_text="/v1/models").first.click()
    expect(page.get_by_role("button", name="Try it out").first).to_be_visible()
    screenshot(page, "08-api-docs")
    assert page.external_requests == []
    assert page.console_errors == [] and csp_violations(page) == []


def test_a_link_only_app_s_builder_copies_the_token_link_and_deleting_asks_first(browser, live_store):
    from apps.catalog.models import StoreApp

    context = watched_context(browser, live_store, viewport={"width": 1280, "height": 900},
                              permissions=["clipboard-read", "clipboard-write"])
    page = watch(context.new_page())
    dialogs = []
    sign_up(page, "sharer")
    page.goto("/build/new/")
    page.get_by_label("Name").fill("Secret Garden")
    page.get_by_label("Short description").fill("For friends only")
    page.get_by_label("Instructions", exact=True).fill("Talk about gardens.")
    page.get_by_role("button", name="Create draft").click()
    expect(page.get_by_text("Draft saved")).to_be_visible()
    page.get_by_label("Who can use it").select_option("link")
    page.get_by_role("button", name="Publish", exact=True).click()
    app = StoreApp.objects.get(name="Secret Garden")
    assert page.url == f"{live_store}/apps/{app.address}/" and app.link_token in page.url

    page.goto(f"/build/{app.slug}/")
    share = page.get_by_label("Link to share", exact=False)
    expect(share).to_have_value(f"{live_store}/apps/{app.address}/")
    page.get_by_role("button", name="Copy link").click()
    expect(page.get_by_role("button", name="✓")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == f"{live_store}/apps/{app.address}/"

    # Deleting asks first: dismissed, nothing happens; accepted, the app is gone.
    page.once("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.get_by_role("button", name="Delete app").click()
    expect(page.get_by_role("button", name="Delete app")).to_be_visible()
    assert dialogs == ["Delete this app for good?"] and StoreApp.objects.filter(pk=app.pk).exists()
    page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
    page.get_by_role("button", name="Delete app").click()
    expect(page.get_by_text("Secret Garden was deleted.")).to_be_visible()
    assert not StoreApp.objects.filter(pk=app.pk).exists()
    assert page.console_errors == [] and csp_violations(page) == []
    context.close()

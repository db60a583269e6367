"""A new user's path through the store, in headless Chromium, screenshots saved under test-artifacts/."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import csp_violations, screenshot, watch, watched_context

pytestmark = pytest.mark.slow


def sign_up(page, username):
    page.goto("/accounts/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email").fill(f"{username}@example.com")
    page.get_by_label("Password", exact=True).fill("a-long-passphrase-42")
    page.get_by_label("Password confirmation").fill("a-long-passphrase-42")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text(f"Welcome, {username}")).to_be_visible()


def test_a_new_user_browses_translates_builds_publishes_and_reviews(page):
    # Browse and search as a visitor.
    page.goto("/")
    expect(page.get_by_role("heading", name="Featured")).to_be_visible()
    screenshot(page, "01-home")
    page.get_by_role("searchbox").fill("translate")
    page.get_by_role("searchbox").press("Enter")
    expect(page.get_by_role("heading", name=re.compile("Apps matching"))).to_be_visible()
    page.get_by_role("link", name=re.compile("Translator")).first.click()

    # Translate: the answer streams into the output pane.
    page.get_by_label("Text to translate").fill("The cat sleeps on the sofa.")
    page.get_by_role("button", name="Translate").click()
    output = page.locator('[data-role="output"]')
    expect(output).not_to_be_empty(timeout=30_000)
    expect(page.get_by_role("button", name="Translate")).to_be_enabled(timeout=60_000)
    screenshot(page, "02-translator")

    # Sign up, build an app, chat with it in the preview.
    sign_up(page, "maker")
    page.goto("/build/new/")
    page.get_by_label("Name").fill("Rain Poet")
    page.get_by_label("Short description").fill("Short poems about rain <script>alert('x')</script>")
    page.get_by_label("Instructions", exact=True).fill("Answer with a short poem about rain.")
    page.get_by_label("Conversation starters").fill("Write about a storm")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Create draft").click()
    expect(page.get_by_text("Draft saved")).to_be_visible()
    page.get_by_role("button", name="Write about a storm").click()
    answer = page.locator(".message-item.assistant").last
    expect(answer).not_to_have_class(re.compile("streaming"), timeout=60_000)
    expect(answer.locator(".body")).not_to_be_empty()
    page.get_by_label("Message").fill("<script>alert('xss')</script> hello")
    page.get_by_label("Message").press("Enter")
    expect(page.locator(".message-item.user").last).to_contain_text("<script>alert('xss')</script> hello")
    expect(page.locator(".message-item.assistant").last).not_to_have_class(re.compile("streaming"), timeout=60_000)
    screenshot(page, "03-builder-preview")

    # Publish, then find it in search.
    page.get_by_label("Who can use it").select_option("public")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.get_by_role("heading", name="Rain Poet")).to_be_visible()
    page.get_by_role("searchbox").fill("rain poems")
    page.get_by_role("searchbox").press("Enter")
    expect(page.get_by_role("link", name=re.compile("Rain Poet"))).to_be_visible()
    screenshot(page, "04-search")

    # Another user reviews it.
    page.get_by_role("button", name="Log out").click()
    sign_up(page, "reader")
    page.goto("/?q=rain")
    page.get_by_role("link", name=re.compile("Rain Poet")).click()
    page.get_by_label("Rating").select_option("5")
    page.get_by_label("Your review").fill("Lovely little poems.")
    page.get_by_role("button", name="Post review").click()
    expect(page.get_by_text("Thanks! Your review is saved.")).to_be_visible()
    expect(page.get_by_text("★ 5.0 (1 review)")).to_be_visible()
    screenshot(page, "05-app-page")

    # Nothing came from another host, no injected script ever ran, and the Content-Security-Policy blocked nothing
    # the store's pages need (a violation is a console error; this page's are also counted one by one).
    assert page.external_requests == []
    assert page.dialogs == []
    assert page.console_errors == [] and csp_violations(page) == []


def test_phone_width_and_stop_button(browser, live_store):
    context = watched_context(browser, live_store, viewport={"width": 390, "height": 844})
    page = watch(context.new_page())
    page.goto("/apps/chatbot/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    screenshot(page, "06-phone-chatbot")
    page.get_by_label("Message").fill("Tell me a very long story about the sea.")
    page.get_by_label("Message").press("Enter")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible(timeout=30_000)
    stop.click()
    expect(stop).to_be_hidden(timeout=10_000)
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert page.console_errors == [] and csp_violations(page) == []
    context.close()


def test_model_output_is_shown_as_text_never_run(page, django_user_model):
    """Whatever a model writes (here stored as an assistant message) is escaped before it reaches the page."""
    from apps.catalog.models import StoreApp
    from apps.chat.models import Conversation, Message

    sign_up(page, "viewer")
    user = django_user_model.objects.get(username="viewer")
    conversation = Conversation.objects.create(app=StoreApp.objects.get(slug="chatbot"), user=user, title="x")
    evil = "<img src=x onerror=alert(1)> **bold** <script>alert(2)</script>"
    Message.objects.create(conversation=conversation, role="user", content="hi")
    Message.objects.create(conversation=conversation, role="assistant", content=evil)
    page.goto("/apps/chatbot/")
    page.get_by_role("button", name="x", exact=True).click()
    body = page.locator(".message-item.assistant .body")
    expect(body).to_contain_text("<img src=x onerror=alert(1)>")
    expect(body.locator("strong")).to_have_text("bold")  # markdown still works
    assert body.locator("img, script").count() == 0
    assert page.dialogs == []
    assert page.console_errors == [] and csp_violations(page) == []

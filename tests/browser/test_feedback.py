"""The thumbs in a real browser: under a translation (a run) and under a chat answer (a message), with a better
answer typed into the small form; the feedback page then counts them."""

import re

import pytest
from playwright.sync_api import expect

from apps.catalog.models import StoreApp
from apps.feedback.models import Feedback
from tests.browser.conftest import csp_violations
from tests.browser.test_store_flow import sign_up

pytestmark = pytest.mark.slow


def test_thumbs_under_a_translation_and_a_chat_answer(page):
    StoreApp.objects.filter(slug="chatbot").update(max_tokens=8)  # the tiny model's answers are noise: keep them short
    sign_up(page, "rater")

    page.goto("/apps/translator/")
    page.get_by_label("Text to translate").fill("Good morning, my friend.")
    page.get_by_role("button", name="Translate").click()
    tools = page.locator(".feedback-tools.for-run")
    expect(tools).to_be_visible(timeout=60_000)
    tools.get_by_role("button", name="Bad answer").click()
    tools.get_by_label(re.compile("The answer you wanted")).fill("Bonjour, mon ami.")
    tools.get_by_role("button", name="Save").click()  # typed and saved while the thumb's own request may be out
    expect(tools.locator("form.feedback-correction")).to_be_hidden()  # hidden once the correction is saved
    expect(tools.get_by_role("status")).to_have_text("Thanks: saved in your rated answers.")
    expect(tools.get_by_role("button", name="Bad answer")).to_have_attribute("aria-pressed", "true")

    page.goto("/apps/chatbot/")
    page.get_by_label("Message").fill("What is the capital of France?")
    page.get_by_label("Message").press("Enter")
    answer = page.locator(".message-item.assistant").last
    expect(answer).not_to_have_class(re.compile("streaming"), timeout=60_000)
    answer.get_by_role("button", name="Good answer").click()
    expect(answer.get_by_role("button", name="Good answer")).to_have_attribute("aria-pressed", "true")

    run_feedback = Feedback.objects.get(run__isnull=False)
    assert run_feedback.rating == "down" and run_feedback.correction == "Bonjour, mon ami."
    assert run_feedback.prompt == "Good morning, my friend." and run_feedback.system  # a built-in's instructions are public
    assert Feedback.objects.get(message__isnull=False).rating == "up"
    page.goto("/feedback/")
    expect(page.get_by_text("2 rated answers can go into a training file")).to_be_visible()
    assert csp_violations(page) == [] and page.console_errors == []

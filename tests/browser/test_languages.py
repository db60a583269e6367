"""The store's scripts speak the page's language: their words come from Django's JavaScript catalog (/jsi18n/)."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import csp_violations, screenshot

pytestmark = pytest.mark.slow


def test_the_chat_script_speaks_simplified_chinese(page):
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/apps/chatbot/")
    with page.expect_navigation():
        page.select_option("#lang", "zh-hans")  # the footer's switcher submits itself
    expect(page.locator("html")).to_have_attribute("lang", "zh-hans")
    page.locator("#chat-input").fill("Hello")
    page.locator("#chat-input").press("Enter")
    answer = page.locator(".message-item.assistant").last
    expect(answer).not_to_have_class(re.compile("streaming"), timeout=60_000)
    # The Copy buttons are made by store.js: translated through gettext().
    expect(page.locator(".message-item.user .tools button").first).to_have_text("复制")
    screenshot(page, "07-chatbot-zh-hans")
    assert errors == [] and page.dialogs == []
    assert page.console_errors == [] and csp_violations(page) == []

"""/compare/ in headless Chromium: two models answer one prompt at once, in two panes, through the live store and
its model server; a vote changes the ratings shown."""

import re

import pytest
from django.conf import settings
from playwright.sync_api import expect

from tests.browser.conftest import csp_violations, screenshot
from tests.browser.test_store_flow import sign_up

pytestmark = pytest.mark.slow


def test_two_models_stream_side_by_side_and_a_vote_changes_the_ratings(page, live_store, tiny_hf_dir):
    from apps.accounts.models import User
    from apps.registry.services import model_version_register

    sign_up(page, "judge")
    fine_tune = f"ft:{settings.BASE_MODEL_ID}:judge:poet:ftjob-browser"
    model_version_register(name=fine_tune, source_dir=tiny_hf_dir, owner=User.objects.get(username="judge"))

    runs = []  # (event, url) of the two answers' requests, in the order the browser saw them
    page.on("request", lambda r: runs.append(("sent", r.url)) if "/run/" in r.url else None)
    page.on("requestfinished", lambda r: runs.append(("finished", r.url)) if "/run/" in r.url else None)

    page.goto("/")
    page.get_by_role("link", name="Compare").click()
    expect(page.get_by_role("heading", name="Compare, side by side")).to_be_visible()
    expect(page.get_by_text("No votes yet")).to_be_visible()

    # Bad input first: the same model on both sides is a readable message, nothing streams.
    page.get_by_label("Model or app A").select_option(f"{settings.BASE_MODEL_ID}@latest")
    page.get_by_label("Model or app B").select_option(f"{settings.BASE_MODEL_ID}@latest")
    page.get_by_label("Prompt").fill("Write one line about the sea.")
    page.get_by_role("button", name="Compare", exact=True).click()
    expect(page.locator("#compare [data-role=error]")).to_contain_text("pick two different ones")

    page.get_by_label("Model or app B").select_option(f"{fine_tune}@latest")
    page.get_by_label("Max tokens").fill("24")
    page.get_by_role("button", name="Compare", exact=True).click()
    pane_a, pane_b = page.locator('[data-side="a"]'), page.locator('[data-side="b"]')
    expect(pane_a).to_contain_text(f"{settings.BASE_MODEL_ID}@v1")
    expect(pane_b).to_contain_text(f"{fine_tune}@v1")
    expect(pane_b.locator("[data-role=settings]")).to_contain_text("temperature")
    vote_a = page.get_by_role("button", name="B is better")
    expect(vote_a).to_be_visible(timeout=90_000)  # shown once both answers have ended
    expect(pane_a.locator("[data-role=output]")).not_to_be_empty()
    expect(pane_b.locator("[data-role=output]")).not_to_be_empty()
    # Both requests were sent before either answer ended: the two streamed at the same time.
    assert [event for event, _ in runs[:2]] == ["sent", "sent"], runs
    assert {url.rsplit("/", 1)[-1] for _, url in runs} == {"a", "b"}
    screenshot(page, "compare-01-answers")

    vote_a.click()
    expect(page.get_by_text("Your vote is counted")).to_be_visible()
    board = page.locator("[data-role=leaderboard]")
    expect(board.locator(f'tr[data-entry="{fine_tune}@v1"] [data-role=rating]')).to_have_text("1016.0")
    expect(board.locator(f'tr[data-entry="{settings.BASE_MODEL_ID}@v1"] [data-role=rating]')).to_have_text("984.0")
    screenshot(page, "compare-02-voted")

    page.goto("/compare/leaderboard/")
    expect(page.locator(f'tr[data-entry="{fine_tune}@v1"] [data-role=rating]')).to_have_text("1016.0")
    expect(page.get_by_text(re.compile("B is better"))).to_be_visible()
    assert csp_violations(page) == []
    # The one error logged: Chromium's line for the refused start (the 400 shown as a message above).
    assert [e for e in page.console_errors if "status of 400" not in e] == [] and len(page.console_errors) == 1

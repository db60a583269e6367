"""Knowledge files in a real browser: a creator uploads a Markdown file to an app, a worker indexes it while the
builder shows its progress, the app is published, and another user's question is answered with the file's
passage as its source (shown as text), the same passage through /api/v1 and /v1 (`app:<slug>`, the real openai
client); the other user can neither read nor list the file.

The store runs the tiny random test model, which states no facts: the fact is asserted in the source the answer
was given and shown (tests/knowledge/test_runs.py asserts the prompt sent to the engine holds it, and
bench/knowledge.py measures how often the real base model states it)."""

import json
import re
import urllib.error
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import csp_violations, screenshot
from tests.browser.test_store_flow import sign_up
from tests.live import celery_worker

pytestmark = pytest.mark.slow

GUIDE = """# Zephyr X200 guide

The Zephyr X200 is a handheld weather station made by Brightfield Instruments.

## Warranty

The warranty of the Zephyr X200 lasts 27 months from the day of purchase. Water damage is covered when the
rubber seal was closed. Note: <img src=x onerror="window.__xss=1"> is plain text here.

## Battery

The battery holds a charge for 41 days.
"""
QUESTION = "How long is the warranty of the Zephyr X200?"


def api(url, key, body=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_creator_uploads_knowledge_and_another_users_answer_cites_it(page, live_store, tmp_path, django_user_model):
    from openai import OpenAI

    from apps.accounts.services import api_key_create

    guide = tmp_path / "guide.md"
    guide.write_text(GUIDE)
    with celery_worker(queues="celery", log_path=tmp_path / "worker.log"):
        sign_up(page, "author")
        page.goto("/build/new/")
        page.get_by_label("Name").fill("Zephyr Helper")
        page.get_by_label("Short description").fill("Answers about the Zephyr X200")
        page.get_by_label("Instructions", exact=True).fill("Answer questions about the Zephyr X200 weather station.")
        page.get_by_label("Max tokens").fill("8")
        page.get_by_role("button", name="Create draft").click()
        expect(page.get_by_text("Draft saved")).to_be_visible()
        page.get_by_label("Add a file").set_input_files(str(guide))
        page.get_by_role("button", name="Upload").click()
        expect(page.get_by_text("guide.md is uploaded")).to_be_visible()
        item = page.locator('[data-role="knowledge-files"] li', has_text="guide.md")
        expect(item.locator('[data-role="status"]')).to_have_text("Ready", timeout=60_000)  # polled, no reload
        expect(item).to_contain_text(re.compile(r"\d+ passages?"))
        screenshot(page, "knowledge-01-builder")
        page.get_by_label("Who can use it").select_option("public")
        page.get_by_role("button", name="Publish", exact=True).click()
        expect(page.get_by_role("heading", name="Zephyr Helper")).to_be_visible()
        slug = page.url.rstrip("/").rsplit("/", 1)[-1]

    # Another user asks; the answer shows its source: the file's name and the passage, as text.
    page.get_by_role("button", name="Log out").click()
    sign_up(page, "reader")
    page.goto(f"/apps/{slug}/")
    assert "guide.md" not in page.content()  # the page lists no files
    page.get_by_label("Message").fill(QUESTION)
    page.get_by_label("Message").press("Enter")
    answer = page.locator(".message-item.assistant").last
    expect(answer).not_to_have_class(re.compile("streaming"), timeout=60_000)
    sources = answer.locator(".sources")
    expect(sources.locator("summary")).to_have_text(re.compile(r"\d+ sources?"))
    sources.locator("summary").click()
    first = sources.locator("li").first
    expect(first.locator(".source-file")).to_have_text("guide.md › Zephyr X200 guide › Warranty")
    expect(first.locator(".source-passage")).to_contain_text("lasts 27 months from the day of purchase")
    expect(first.locator(".source-passage")).to_contain_text('<img src=x onerror="window.__xss=1">')
    assert sources.locator("img").count() == 0 and page.evaluate("window.__xss") is None
    shown = [t.strip() for t in sources.locator(".source-passage").all_text_contents()]
    screenshot(page, "knowledge-02-answer-with-sources")
    assert page.console_errors == [] and csp_violations(page) == []

    # The same question through /api/v1 and /v1 gets the same passages.
    reader = django_user_model.objects.get(username="reader")
    key = api_key_create(user=reader, name="reader")[1]
    status, body = api(f"{live_store}/api/v1/apps/{slug}/runs/", key, {"message": QUESTION})
    assert status == 200, body
    assert [s["text"] for s in body["sources"]] == shown
    client = OpenAI(base_url=f"{live_store}/v1", api_key=key)
    completion = client.chat.completions.create(model=f"app:{slug}", messages=[{"role": "user", "content": QUESTION}],
                                                max_tokens=4)
    assert [s["text"] for s in completion.model_extra["sources"]] == shown
    assert completion.model_extra["sources"][0]["file"] == "guide.md"

    # ... and can neither list nor read the file.
    status, body = api(f"{live_store}/api/v1/apps/{slug}/knowledge/", key)
    assert status == 404 and "27 months" not in json.dumps(body)
    file_id = reader.__class__.objects.get(username="author").knowledge_files.get().pk
    assert api(f"{live_store}/api/v1/apps/{slug}/knowledge/{file_id}/", key)[0] == 404
    response = page.request.get(f"/build/{slug}/knowledge/status")
    assert response.status == 404

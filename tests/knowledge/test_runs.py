"""Answers with sources: one retrieval in the one run service, the same on the page, /api/v1 and /v1 (`app:`),
and the files private to their creator on every face."""

from __future__ import annotations

import json

import pytest

from apps.accounts.services import api_key_create
from apps.chat.guard import QUOTE_LIMIT, LeakGuard
from apps.chat.models import Message
from apps.inference import services as inference
from tests.catalog.conftest import run
from tests.knowledge.conftest import GUIDE

pytestmark = pytest.mark.django_db
QUESTION = "How long is the warranty of the Zephyr X200?"


def record_streams(monkeypatch, pick) -> list:
    """`pick(request)` of each request the engine is asked to generate (the real engine still answers)."""
    engine, sent = inference.engine_get(), []
    original = engine.stream

    def stream(request):
        sent.append(pick(request))
        return original(request)

    monkeypatch.setattr(engine, "stream", stream)
    return sent


@pytest.fixture
def prompts_sent(monkeypatch):
    """The messages of each request the engine is asked to generate."""
    return record_streams(monkeypatch, lambda request: request.messages)


@pytest.fixture
def params_sent(monkeypatch, prompts_sent):
    """The sampling parameters of each request the engine is asked to generate."""
    return record_streams(monkeypatch, lambda request: request.params)


def passages(sources) -> list[tuple[str, str]]:
    return [(s["file"], s["text"]) for s in sources]


def test_the_same_question_gets_the_same_sources_on_every_face(client, guide_app, other_user, prompts_sent,
                                                               params_sent):
    client.force_login(other_user)
    status, events = run(client, guide_app.slug, {"message": QUESTION})
    assert status == 200, events
    done = events[-1]
    assert done["done"] and done["sources"], done
    first = done["sources"][0]
    assert first["index"] == 1 and first["file"] == "guide.md" and "27 months" in first["text"]
    assert set(first) == {"index", "file", "heading", "text", "chunk"}
    # The prompt holds the passage under its marker, before the question; the stored turn is the question alone.
    knowledge = prompts_sent[-1][-2]
    assert knowledge["role"] == "system" and "[1] guide.md › Zephyr X200 guide › Warranty" in knowledge["content"]
    assert "27 months" in knowledge["content"] and prompts_sent[-1][-1] == {"role": "user", "content": QUESTION}
    assert Message.objects.filter(role="user").last().content == QUESTION
    # The app's repetition penalty counts the answer's own tokens, not the passages it should quote.
    assert guide_app.repetition_penalty > 1 and params_sent[-1].penalize_prompt is False

    key = api_key_create(user=other_user, name="k")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    api = client.post(f"/api/v1/apps/{guide_app.slug}/runs/", data=json.dumps({"message": QUESTION}),
                      content_type="application/json", **auth).json()
    v1 = client.post("/v1/chat/completions", content_type="application/json", **auth, data=json.dumps(
        {"model": f"app:{guide_app.slug}", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4})).json()
    assert passages(api["sources"]) == passages(v1["sources"]) == passages(done["sources"])
    assert prompts_sent[-1][-2] == knowledge  # /v1 built the same knowledge message

    # Streaming /v1: the sources come in a chunk of their own, without choices.
    response = client.post("/v1/chat/completions", content_type="application/json", **auth, data=json.dumps(
        {"model": f"app:{guide_app.slug}", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2,
         "stream": True}))
    chunks = [json.loads(line[6:]) for line in b"".join(response.streaming_content).decode().split("\n\n")
              if line.startswith("data: {")]
    assert [passages(c["sources"]) for c in chunks if "sources" in c] == [passages(done["sources"])]


def test_a_question_the_files_do_not_answer_runs_without_sources(client, guide_app, other_user, prompts_sent,
                                                                  params_sent):
    client.force_login(other_user)
    status, events = run(client, guide_app.slug, {"message": "Write a haiku about autumn leaves"})
    assert status == 200 and events[-1]["sources"] == []
    assert all("knowledge files" not in m["content"] for m in prompts_sent[-1])
    assert params_sent[-1].penalize_prompt is True  # no passages: the app's penalty as it always counted


def test_the_files_are_private_to_their_creator(client, guide_app, user, other_user):
    knowledge = guide_app.knowledge_files.get()
    key = api_key_create(user=other_user, name="k")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    base = f"/api/v1/apps/{guide_app.slug}/knowledge/"
    # The app is public: the other user may use it, but its files are a 404 everywhere.
    assert client.get(f"/api/v1/apps/{guide_app.slug}/", **auth).status_code == 200
    for response in (client.get(base, **auth), client.get(f"{base}{knowledge.pk}/", **auth),
                     client.delete(f"{base}{knowledge.pk}/", **auth)):
        assert response.status_code == 404 and "27 months" not in response.content.decode()
    client.force_login(other_user)
    assert client.get(f"/build/{guide_app.slug}/knowledge/status").status_code == 404
    assert client.post(f"/build/{guide_app.slug}/knowledge/{knowledge.pk}/delete").status_code == 404
    page = client.get(f"/apps/{guide_app.slug}/").content.decode()
    assert "guide.md" not in page and "27 months" not in page
    assert guide_app.knowledge_files.count() == 1
    # Its creator lists metadata, never the content.
    owner_key = api_key_create(user=user, name="mine")[1]
    listed = client.get(base, HTTP_AUTHORIZATION=f"Bearer {owner_key}").json()["results"]
    assert [f["name"] for f in listed] == ["guide.md"] and "27 months" not in json.dumps(listed)


def test_the_builder_uploads_shows_progress_and_deletes(client, guide_app, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    page = client.get(f"/build/{guide_app.slug}/").content.decode()
    assert "guide.md" in page and 'data-role="knowledge-files"' in page
    response = client.post(f"/build/{guide_app.slug}/knowledge/upload",
                           {"file": SimpleUploadedFile("faq.html", b"<html><body><h1>FAQ</h1><p>Open daily.</p></body></html>")})
    assert response.status_code == 302
    files = {f["name"]: f for f in client.get(f"/build/{guide_app.slug}/knowledge/status").json()["files"]}
    assert files["faq.html"]["status"] == "uploaded" and files["guide.md"]["status"] == "ready"
    response = client.post(f"/build/{guide_app.slug}/knowledge/upload",
                           {"file": SimpleUploadedFile("x.md", b"GIF89a\x00\x00")}, follow=True)
    assert "GIF image" in response.content.decode()
    response = client.post(f"/build/{guide_app.slug}/knowledge/{files['faq.html']['id']}/delete")
    assert response.status_code == 302 and not guide_app.knowledge_files.filter(name="faq.html").exists()


def test_whole_file_extraction_is_cut_off_after_300_quoted_characters():
    text = GUIDE.replace("\n", " ") + " " + " ".join(f"Clause {i} says the seal must be checked every {i} weeks."
                                                      for i in range(40))
    guard = LeakGuard(private_texts=[], secrets=[], quoted_files={"guide.md": [text]})
    words = text.split(" ")
    sent, piece = "", 0
    while not guard.tripped and piece < len(words):
        sent += guard.feed(words[piece] + " ")
        piece += 1
    assert guard.tripped and guard.reason == "knowledge"
    assert QUOTE_LIMIT - 40 <= len(sent) <= QUOTE_LIMIT + 60, len(sent)  # cut just past 300 quoted characters
    # Quoting a passage (under the limit) and talking about it is fine.
    guard = LeakGuard(private_texts=[], secrets=[], quoted_files={"guide.md": [text]})
    answer = ("According to the guide, " + " ".join(words[:30]) + " and that is all I can tell. ") * 1
    assert guard.feed(answer) + guard.flush() == answer and not guard.tripped

"""Feedback on answers: rating (own answers only), the export to a training file that a fine-tuning job accepts,
and what an app's creator sees of it (counts only)."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from apps.accounts.services import api_key_create
from apps.feedback.models import Feedback
from apps.tuning import services as tuning
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.services import runner
from tests.catalog.conftest import make_app, run

pytestmark = pytest.mark.django_db

SECRET = "SECRET-INSTRUCTIONS"
TRANSLATOR_SECRET = "SECRET-TRANSLATE into {target} like a poet."


def rate(client, expected=201, **body):
    response = client.post("/api/v1/feedback/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == expected, response.content[:400]
    return response.json()


def chat(client, app, message, conversation=None) -> tuple[int, int]:
    """One real run of a chatbot app through the page: (conversation id, the assistant message's id)."""
    status, events = run(client, app.slug, {"message": message, "conversation": conversation})
    assert status == 200, events
    conversation = events[-1]["conversation"]
    messages = client.get(f"/conversations/{conversation}/").json()["messages"]
    assert messages[-1]["role"] == "assistant"
    return conversation, messages[-1]["id"]


@pytest.fixture
def people(store, user, other_user, settings, tmp_path):
    """`user` rates; `other_user` is the creator of the apps the user runs."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FINETUNE_WORK_ROOT = tmp_path / "finetune"
    rater, creator = Client(), Client()
    rater.force_login(user)
    creator.force_login(other_user)
    chatbot = make_app(other_user)  # instructions: SECRET-INSTRUCTIONS...
    translator = make_app(other_user, name="Poet Translator", kind="translator", instructions=TRANSLATOR_SECRET, max_tokens=8)
    return {"rater": rater, "creator": creator, "chatbot": chatbot, "translator": translator}


def test_thumbs_to_training_file_to_fine_tuning_job(people, user, monkeypatch):
    rater, chatbot, translator = people["rater"], people["chatbot"], people["translator"]

    # A conversation with another creator's chatbot: one answer corrected, one rated down without a correction,
    # the rest thumbs-up.
    conversation, corrected = chat(rater, chatbot, "What is the capital of France?")
    created = rate(rater, message=corrected, rating="down", correction="The capital of France is Paris.")
    assert created["rating"] == "down" and created["app"] == chatbot.slug
    conversation, bad = chat(rater, chatbot, "And of Spain?", conversation)
    rate(rater, message=bad, rating="down")
    liked = []
    for i in range(9):
        conversation, message = chat(rater, chatbot, f"Tell me fact number {i}.", conversation)
        rate(rater, message=message, rating="up")
        liked.append(message)

    # A translator run keeps no text until it is rated: the page sends its inputs and answer with the rating.
    inputs = {"text": "Good morning, my friend.", "source": "English", "target": "French"}
    status, events = run(rater, translator.slug, inputs)
    assert status == 200 and events[-1]["done"] and events[-1]["run"]
    answer = "".join(e.get("delta", "") for e in events)
    forged = rate(rater, 400, run=events[-1]["run"], rating="up", inputs=inputs, answer=answer + " (not what it said)")
    assert forged["error"]["param"] == "answer"
    rated_run = rate(rater, run=events[-1]["run"], rating="down", inputs=inputs, answer=answer,
                     correction="Bonjour, mon ami.")
    assert rated_run["prompt"].endswith("Good morning, my friend.") and rated_run["system"] == ""
    # Rating the same answer again changes the rating (200, the same feedback).
    assert rate(rater, 200, run=events[-1]["run"], rating="down", correction="Bonjour, mon ami.")["id"] == rated_run["id"]

    # The feedback page: one click exports and opens the customize page with the new file chosen.
    page = rater.get("/feedback/")
    assert page.status_code == 200 and b"11 rated answers can go into a training file" in page.content
    response = rater.post("/feedback/export")
    assert response.status_code == 302
    training_file = TrainingFile.objects.get(owner=user)
    assert response["Location"] == f"/customize/?training_file={training_file.public_id}#job-form"
    customize = rater.get(response["Location"]).content.decode()
    assert re.search(rf'<option value="{training_file.public_id}"\s+selected', customize)

    examples = [json.loads(line) for line in training_file.file.open("rb").read().decode().splitlines()]
    assert len(examples) == 11  # 9 thumbs-up, 2 corrections; the thumbs-down without one is left out
    everything = json.dumps(examples)
    assert SECRET not in everything and "SECRET-TRANSLATE" not in everything and "poet" not in everything
    assert all(m["role"] != "system" for e in examples for m in e["messages"])
    first = examples[0]["messages"]
    assert first == [{"role": "user", "content": "What is the capital of France?"},
                     {"role": "assistant", "content": "The capital of France is Paris."}]
    # The answers after the bad one start after it; the bad answer is in no example.
    bad_text = Feedback.objects.get(message_id=bad).message.content
    assert examples[1]["messages"][0] == {"role": "user", "content": "Tell me fact number 0."}
    assert all(m["content"] != bad_text or m["role"] == "user" for e in examples for m in e["messages"]) or not bad_text.strip()
    assert examples[-1]["messages"] == [
        {"role": "user", "content": "Translate from English into French:\n\nGood morning, my friend."},
        {"role": "assistant", "content": "Bonjour, mon ami."},
    ]

    # Validated like an upload (what the validation task runs), then accepted by a fine-tuning job on /v1.
    training_file = tuning.training_file_validate(file_id=training_file.pk)
    assert training_file.status == "processed" and training_file.format == "chat", training_file.problems
    assert training_file.example_count == 11
    key = api_key_create(user=user, name="tuning")[1]
    response = Client().post("/v1/fine_tuning/jobs", data=json.dumps({
        "model": "smollm2-135m-instruct", "training_file": training_file.public_id,
        "hyperparameters": {"n_epochs": 1, "batch_size": 4}}), content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content
    job = FineTuningJob.objects.get(public_id=response.json()["id"])
    assert job.status == "validating_files"
    # The gpu queue's task, up to the end of its `validating_files` step (the file re-checked against the base
    # model). Training itself is tests/tuning's business (a real worker): here it is not started.
    monkeypatch.setattr(runner, "_training_start", lambda *args, **kwargs: False)
    tuning.finetune_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "queued", (job.status, job.error_message)
    assert job.events.filter(message="Files validated.").exists()


def test_feedback_is_its_raters_alone_and_creators_see_counts_only(people, user, other_user):
    rater, creator, chatbot, translator = people["rater"], people["creator"], people["chatbot"], people["translator"]
    _, message = chat(rater, chatbot, "Where do pirates sleep?")
    feedback = rate(rater, message=message, rating="down", correction="In hammocks below deck, CORRECTION-TEXT.")
    inputs = {"text": "The sea is calm.", "source": "English", "target": "Spanish"}
    status, events = run(rater, translator.slug, inputs)
    run_id = events[-1]["run"]

    # Another user (here the apps' creator) can neither read, change nor delete it, nor rate the rater's answers.
    url = f"/api/v1/feedback/{feedback['id']}/"
    assert creator.get(url).status_code == 404
    assert creator.patch(url, data=json.dumps({"rating": "up"}), content_type="application/json").status_code == 404
    assert creator.delete(url).status_code == 404
    assert creator.get("/api/v1/feedback/").json()["results"] == []
    assert rate(creator, 404, message=message, rating="up")["error"]["code"] == "message_not_found"
    assert rate(creator, 404, run=run_id, rating="up", inputs=inputs, answer="x")["error"]["code"] == "run_not_found"
    stored = Feedback.objects.get(pk=feedback["id"])
    assert stored.rating == "down" and stored.user == user and Feedback.objects.count() == 1

    # The creator's builder page shows the counts, never the conversation or the correction.
    rate(rater, run=run_id, rating="up", inputs=inputs, answer="".join(e.get("delta", "") for e in events))
    page = creator.get(f"/build/{chatbot.slug}/").content.decode()
    assert "👍 0 · 👎 1" in page
    assert "CORRECTION-TEXT" not in page and "Where do pirates sleep?" not in page
    assert "👍 1 · 👎 0" in creator.get(f"/build/{translator.slug}/").content.decode()

    # The rater changes and deletes their own.
    changed = rater.patch(url, data=json.dumps({"rating": "up", "correction": ""}), content_type="application/json").json()
    assert changed["rating"] == "up" and changed["correction"] == ""
    listed = rater.get(f"/api/v1/feedback/?conversation={Feedback.objects.get(pk=feedback['id']).message.conversation_id}").json()
    assert [f["id"] for f in listed["results"]] == [feedback["id"]]
    assert rater.delete(url).status_code == 204 and not Feedback.objects.filter(pk=feedback["id"]).exists()


def test_a_conversation_id_out_of_the_databases_range_lists_nothing(people):
    """Found by the fuzzer: an id past 64 bits overflowed SQLite's integers (a 500); it names no conversation."""
    rater = people["rater"]
    for conversation in ("-6080593249277809830920192", str(2**63), "0", "-1"):
        listed = rater.get(f"/api/v1/feedback/?conversation={conversation}")
        assert listed.status_code == 200 and listed.json()["results"] == [], conversation
    assert rater.get("/api/v1/feedback/?conversation=abc").status_code == 400


def test_bad_feedback_is_a_clear_400(people):
    rater, chatbot = people["rater"], people["chatbot"]
    _, message = chat(rater, chatbot, "Hello?")
    user_message = message - 1
    cases = [
        ({"message": message, "rating": "meh"}, "rating"),
        ({"message": message, "rating": "up", "correction": "x" * 8001}, "correction"),
        ({"rating": "up"}, "message"),
        ({"message": message, "run": 1, "rating": "up"}, "message"),
        ({"message": user_message, "rating": "up"}, "message"),  # a user's own turn is no answer
        ({"message": "seven", "rating": "up"}, "message"),
    ]
    for body, param in cases:
        error = rate(rater, 400, **body)["error"]
        assert error["param"] == param and error["message"], (body, error)
    assert rate(rater, 404, message=10**9, rating="up")["error"]["code"] == "message_not_found"
    # Too few usable answers for a training file: a clear message, on the API and on the page.
    rate(rater, message=message, rating="up")
    error = rater.post("/api/v1/feedback/export/").json()["error"]
    assert error["code"] == "too_few_examples" and "1 usable rated answer(s)" in error["message"]
    page = rater.post("/feedback/export", follow=True)
    assert b"a training file needs at least 10" in page.content and not TrainingFile.objects.exists()

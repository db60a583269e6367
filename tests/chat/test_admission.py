"""Bounded work per run on every face: max_tokens within the context, n x num_beams, concurrent streams, tokens
billed as they are produced, and inputs that used to be a 500."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import RateWindow
from apps.accounts.services import api_key_create
from apps.catalog.models import StoreApp
from apps.chat import services as run_services
from apps.chat.admission import TooManyStreams
from apps.chat.models import AppRun, StreamSlot
from apps.inference import services as inference

pytestmark = pytest.mark.django_db


@pytest.fixture
def key(user):
    return api_key_create(user=user, name="admission")[1]


def v1(client, key, path, body):
    return client.post(f"/v1/{path}", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def chat_body(**extra):
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a story."}], **extra}


def test_max_tokens_is_at_most_the_context_left(client, key, engine_requests):
    seen = engine_requests
    context = inference.prompt_measure(inference.model_spec_resolve(user=None, reference="smollm2-135m-instruct")).context
    refused = v1(client, key, "chat/completions", chat_body(max_tokens=context))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "max_tokens" and str(context) in error["message"]
    assert seen == []
    # Omitted, it is exactly what the context leaves after the prompt, never more.
    assert v1(client, key, "chat/completions", chat_body(max_tokens=None, stop=["."])).status_code == 200
    measure = inference.prompt_measure(seen[0].model)
    assert seen[0].params.max_tokens == context - measure.request_tokens(seen[0])


def test_n_times_num_beams_has_a_budget(client, store, key, settings):
    settings.RUN_MAX_SEQUENCES = 8
    refused = v1(client, key, "chat/completions", chat_body(n=4, num_beams=4, max_tokens=2))
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "n"
    assert "at most 8" in refused.json()["error"]["message"]
    assert not RateWindow.objects.exists()  # refused before any quota was taken
    assert v1(client, key, "chat/completions", chat_body(n=2, num_beams=4, max_tokens=2, temperature=0)).status_code == 200


def test_concurrent_streams_are_capped_per_user(store, user, other_user, settings):
    settings.RUN_MAX_CONCURRENT_STREAMS = 2
    chatbot = StoreApp.objects.get(slug="chatbot")
    caller = run_services.Caller(user)

    def start(who=caller):
        return run_services.app_run_start(caller=who, app=chatbot, inputs={"message": "Hi"})

    first, second = start(), start()
    taken = RateWindow.objects.get(scope=f"user:{user.pk}").requests
    with pytest.raises(TooManyStreams) as refused:
        start()
    assert refused.value.status == 429 and refused.value.headers["Retry-After"]
    assert RateWindow.objects.get(scope=f"user:{user.pk}").requests == taken  # a refused run spends no request
    assert start(run_services.Caller(other_user)) is not None  # another user has slots of their own
    events = run_services.run_events(first)
    next(events)
    events.close()  # the client went away: its slot is free at once
    third = start()
    # A slot left by a process that died stops counting once its heartbeat is stale.
    StreamSlot.objects.filter(scope=f"user:{user.pk}").update(heartbeat=timezone.now() - timedelta(hours=1))
    assert start() is not None
    for run in (second, third):
        list(run_services.run_events(run))
    assert StreamSlot.objects.filter(scope=f"user:{user.pk}").count() == 1


def test_a_client_that_leaves_early_is_billed_for_what_it_was_sent(client, store, user, key):
    response = v1(client, key, "chat/completions", chat_body(stream=True, max_tokens=40, ignore_eos=True, temperature=0))
    assert response.status_code == 200
    chunks = response._iterator  # the test client's wrapper: closing it is how a client hangs up
    received = [next(chunks) for _ in range(6)]
    assert all(c.startswith(b"data: ") for c in received)
    chunks.close()  # the client hangs up mid-answer (the test client then closes the response)
    run = AppRun.objects.get(user=user)
    assert run.finish_reason == "cancelled" and run.prompt_tokens > 0 and 5 <= run.completion_tokens < 40
    window = RateWindow.objects.get(scope=f"user:{user.pk}")
    assert window.tokens == run.prompt_tokens + run.completion_tokens
    assert not StreamSlot.objects.exists()


def test_tokens_are_billed_while_a_stream_runs(store, user, settings):
    """A long answer adds to the quota as it goes, not only at its end."""
    chatbot = StoreApp.objects.get(slug="chatbot")
    run = run_services.app_run_start(caller=run_services.Caller(user), app=chatbot, inputs={"message": "Hi"},
                                     overrides={"max_tokens": 60, "ignore_eos": True})
    events = run_services.run_events(run)
    deltas = 0
    for event in events:
        if isinstance(event, run_services.Delta):
            deltas += 1
        if deltas == 40:
            break
    window = RateWindow.objects.get(scope=f"user:{user.pk}")
    assert window.tokens >= run.meter.prompt_tokens + 32  # billed every 16 tokens
    events.close()


@pytest.mark.parametrize("path, body, param", [
    ("chat/completions", chat_body(messages=[{"role": "user", "content": "\ud800"}]), "messages[0].content"),
    ("chat/completions", {"model": "app:chatbot", "messages": [{"role": "user", "content": "hi \udfff"}]}, "messages[0].content"),
    ("completions", {"model": "smollm2-135m-instruct", "prompt": "\ud800 once"}, "prompt"),
])
def test_lone_surrogates_are_a_400_not_a_500(client, store, key, path, body, param):
    response = v1(client, key, path, body)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["param"] == param


@pytest.mark.parametrize("slug, body, param", [
    ("text-generator", {"fields": ["topic", "otters"]}, "fields"),
    ("text-generator", {"fields": "otters"}, "fields"),
    ("chatbot", {"message": "hi", "conversation": "1; DROP TABLE"}, "conversation"),
    ("chatbot", {"message": "hi", "conversation": {"id": 1}}, "conversation"),
    ("translator", {"text": "\ud800", "source": "English", "target": "German"}, "text"),
])
def test_page_runs_refuse_malformed_bodies_with_a_400(client, store, user, slug, body, param):
    client.force_login(user)
    response = client.post(f"/apps/{slug}/run", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"]["param"] == param
    assert not AppRun.objects.exists()

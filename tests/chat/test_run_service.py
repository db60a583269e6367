"""The one run service: the same request through the page, /api/v1 and /v1 meets the same rules.

The engine is the real (tiny) one; the test only watches which requests reach it.
"""

from __future__ import annotations

import json

import pytest

from apps.accounts.models import RateWindow
from apps.accounts.services import api_key_create
from apps.chat.models import AppRun

pytestmark = pytest.mark.django_db

TEXT = "Good morning, my friend."


class Faces:
    """One translator request, sent the way each face takes it."""

    def __init__(self, client, user):
        self.client = client
        client.force_login(user)
        self.key = api_key_create(user=user, name="faces")[1]

    def _post(self, url, body, *, key=True):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if key else {}
        response = self.client.post(url, data=json.dumps(body), content_type="application/json", **headers)
        if response.get("Content-Type", "").startswith("text/event-stream"):
            b"".join(response.streaming_content)  # read to the end: the run is recorded once it is complete
        return response

    def page(self, *, text, target, source="English"):
        return self._post("/apps/translator/run", {"text": text, "source": source, "target": target}, key=False)

    def native(self, *, text, target, source="English"):
        return self._post("/api/v1/apps/translator/runs/", {"text": text, "source": source, "target": target})

    def openai(self, *, text, target, source="English"):
        return self._post("/v1/chat/completions", {"model": "app:translator", "messages": [{"role": "user", "content": text}],
                                                   "target_language": target, "source_language": source})


def user_window(user) -> tuple[int, int]:
    row = RateWindow.objects.filter(scope=f"user:{user.pk}").order_by("-window_start").first()
    return (row.requests, row.tokens) if row else (0, 0)


def test_the_same_translator_request_is_the_same_run_on_every_face(client, user, engine_requests):
    faces = Faces(client, user)
    effects = {}
    for name in ("page", "native", "openai"):
        before = user_window(user)
        response = getattr(faces, name)(text=TEXT, target="German")
        assert response.status_code == 200, (name, response.content[:300])
        after = user_window(user)
        effects[name] = (after[0] - before[0], after[1] - before[1])
    first, *others = engine_requests
    assert len(engine_requests) == 3
    for request in others:  # the same prompt, model and decoding
        assert request.messages == first.messages
        assert request.model == first.model
        assert request.params == first.params
    assert first.messages[0]["content"].startswith("You are a translator. Translate the user's text from English to German.")
    # The built-in's worked examples (earlier turns, pairs of user and assistant), then the text itself.
    assert first.messages[-1] == {"role": "user", "content": TEXT}
    assert [m["role"] for m in first.messages[1:-1]] == ["user", "assistant"] * 2
    assert first.params.temperature == 0.0 and first.params.stop == ("\n",)
    # The same quota effect: one request and the same tokens from the user's budget on every face.
    assert effects["page"][0] == effects["native"][0] == effects["openai"][0] == 1
    assert effects["page"][1] == effects["native"][1] == effects["openai"][1] > 0
    runs = AppRun.objects.filter(user=user, app__slug="translator")
    assert runs.count() == 3 and len({(r.prompt_tokens, r.completion_tokens) for r in runs}) == 1


@pytest.mark.parametrize("bad, message, param", [
    ({"target": "Klingon"}, "Choose a target language from the list.", "target"),
    ({"source": "Elvish"}, "Choose a source language from the list.", "source"),
    ({"target": "English"}, "Source and target languages are the same.", "target"),
    ({"text": "   "}, "Please fill in text.", "text"),
])
def test_the_same_bad_translator_request_gets_the_same_error_on_every_face(client, user, engine_requests, bad, message, param):
    faces = Faces(client, user)
    request = {"text": TEXT, "target": "German", "source": "English"} | bad
    v1_param = {"target": "target_language", "source": "source_language"}.get(param, param)
    for name, expected_param in (("page", param), ("native", param), ("openai", v1_param)):
        before = user_window(user)
        response = getattr(faces, name)(**request)
        assert response.status_code == 400, (name, response.content[:300])
        error = response.json()["error"]
        assert (error["message"], error["param"], error["type"]) == (message, expected_param, "invalid_request_error"), name
        assert user_window(user) == before, f"{name}: a refused request took from the quota"
    assert engine_requests == []


def test_page_runs_take_from_the_same_quota_as_the_api(client, user, store, settings):
    settings.RATE_LIMIT_USER_REQUESTS = 2
    faces = Faces(client, user)
    assert faces.page(text=TEXT, target="German").status_code == 200
    assert faces.openai(text=TEXT, target="German").status_code == 200
    for name in ("page", "native", "openai"):
        refused = getattr(faces, name)(text=TEXT, target="German")
        assert refused.status_code == 429, name
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused["Retry-After"]) >= 1


def test_a_refused_chat_run_leaves_the_conversation_as_it_was(client, user, store, settings):
    """Bad input and a refused quota are found before anything is written."""
    client.force_login(user)
    first = client.post("/apps/chatbot/run", data=json.dumps({"message": "Hello"}), content_type="application/json")
    events = [json.loads(c[6:]) for c in b"".join(first.streaming_content).decode().split("\n\n") if c.startswith("data: ")]
    conversation = events[-1]["conversation"]
    settings.RATE_LIMIT_USER_REQUESTS = 1
    refused = client.post("/apps/chatbot/run", data=json.dumps({"conversation": conversation, "regenerate": True}),
                          content_type="application/json")
    assert refused.status_code == 429
    messages = client.get(f"/conversations/{conversation}/").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == "Hello"
    bad = client.post("/apps/chatbot/run", data=json.dumps({"conversation": "not-a-number", "message": "x"}),
                      content_type="application/json")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "conversation"


def anonymous_run(client, **meta):
    return client.post("/apps/translator/run", data=json.dumps({"text": TEXT, "source": "English", "target": "German"}),
                       content_type="application/json", **meta)


def test_anonymous_trials_are_counted_per_address_on_the_server(client, store, settings):
    """Dropping the session cookie (a fresh client each time) gives no more tries; another address has its own."""
    from django.test import Client

    settings.ANON_TRIAL_RUNS = 2
    for _ in range(2):
        response = anonymous_run(Client(), REMOTE_ADDR="203.0.113.7")
        assert response.status_code == 200
        b"".join(response.streaming_content)
    refused = anonymous_run(Client(), REMOTE_ADDR="203.0.113.7")
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "trial_limit" and "Sign up" in error["message"] and int(refused["Retry-After"]) >= 1
    assert anonymous_run(Client(), REMOTE_ADDR="203.0.113.8").status_code == 200
    from django.contrib.sessions.models import Session

    assert Session.objects.count() == 0  # trials write no session rows


def test_a_forwarded_address_counts_only_from_a_trusted_proxy(client, store, settings):
    from django.test import Client

    settings.ANON_TRIAL_RUNS = 1
    forged = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "198.51.100.1"}
    assert anonymous_run(Client(), **forged).status_code == 200
    # Not a trusted proxy: a new forged header is no new address.
    assert anonymous_run(Client(), **(forged | {"HTTP_X_FORWARDED_FOR": "198.51.100.2"})).status_code == 429
    settings.TRUSTED_PROXIES = ["10.0.0.2"]
    proxied = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "evil, 198.51.100.3"}
    assert anonymous_run(Client(), **proxied).status_code == 200
    assert anonymous_run(Client(), **proxied).status_code == 429  # the same client behind the proxy
    assert anonymous_run(Client(), **(proxied | {"HTTP_X_FORWARDED_FOR": "198.51.100.4"})).status_code == 200


def test_all_anonymous_trials_share_a_global_budget(client, store, settings):
    from django.test import Client

    settings.ANON_TRIAL_GLOBAL_RUNS = 2
    for i in range(2):
        assert anonymous_run(Client(), REMOTE_ADDR=f"192.0.2.{i + 1}").status_code == 200
    refused = anonymous_run(Client(), REMOTE_ADDR="192.0.2.50")
    assert refused.status_code == 429 and "used up" in refused.json()["error"]["message"]

"""`model="app:<slug>"` on /v1: the app's instructions and settings, the caller's overrides, usage recorded."""

import json

import pytest

from apps.accounts.services import api_key_create
from apps.catalog.builtin import TRANSLATOR_EXAMPLE_SOURCES, TRANSLATOR_EXAMPLES
from apps.chat.models import AppRun
from apps.inference import services as inference
from apps.inference.types import SamplingParams
from tests.catalog.conftest import make_app

pytestmark = pytest.mark.django_db


def call(client, key, body, url="/v1/chat/completions"):
    return client.post(url, data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_models_list_apps_the_caller_may_use(client, store, user, other_user):
    mine = make_app(user, name="My Private", visibility="private")
    link = make_app(other_user, name="Their Link", visibility="link")
    secret = make_app(other_user, name="Their Private", visibility="private")
    key = api_key_create(user=user, name="k")[1]
    ids = [m["id"] for m in client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}").json()["data"]]
    assert {"smollm2-135m-instruct", "app:chatbot", "app:translator", "app:text-generator", f"app:{mine.slug}"} <= set(ids)
    assert f"app:{link.address}" not in ids and f"app:{link.slug}" not in ids and f"app:{secret.slug}" not in ids
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    model = client.get(f"/v1/models/app:{link.address}", **auth).json()
    assert model["owned_by"] == other_user.username and model["id"] == f"app:{link.address}"
    assert client.get(f"/v1/models/app:{link.slug}", **auth).status_code == 404  # the token is the address
    assert client.get(f"/v1/models/app:{secret.slug}", **auth).status_code == 404
    response = call(client, key, {"model": f"app:{secret.slug}", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert call(client, key, {"model": f"app:{link.address}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code == 200
    assert call(client, key, {"model": f"app:{link.slug}", "messages": [{"role": "user", "content": "hi"}]}).status_code == 404


def test_app_instructions_come_first_and_the_caller_overrides_sampling(client, store, user):
    key = api_key_create(user=user, name="k")[1]
    body = {"model": "app:translator", "messages": [{"role": "user", "content": "Good morning"}], "max_tokens": 3,
            "temperature": 0, "target_language": "German"}
    response = call(client, key, body).json()
    assert response["usage"]["completion_tokens"] == 3 and response["model"] == "app:translator"
    system = ("You are a translator. Translate the user's text from the language of the text to German. "
              "Reply with the translation only: no explanations, no notes, no quotes.")
    direct = inference.generation_run(
        user=None, reference="smollm2-135m-instruct@latest",
        # The built-in's worked examples come between its instructions and the text, as earlier turns.
        messages=[{"role": "system", "content": system},
                  *[{"role": role, "content": text} for pair in zip(TRANSLATOR_EXAMPLE_SOURCES, TRANSLATOR_EXAMPLES["German"])
                    for role, text in zip(("user", "assistant"), pair)],
                  {"role": "user", "content": "Good morning"}],
        params=SamplingParams(max_tokens=3, temperature=0, top_p=0.9, repetition_penalty=1.1),
    )
    assert response["choices"][0]["message"]["content"] == direct.text
    assert response["usage"]["prompt_tokens"] == direct.prompt_tokens
    assert AppRun.objects.get().app.slug == "translator" and AppRun.objects.get().user == user
    assert call(client, key, {**body, "target_language": "Elvish"}).json()["error"]["param"] == "target_language"


def test_app_defaults_apply_when_the_caller_is_silent(client, store, user):
    """The app's max_tokens (4) and temperature (0) apply: the answer is cut at 4 tokens, the same each time
    (the tiny test model never ends this answer by itself); the caller's max_tokens still wins."""
    app = make_app(user, max_tokens=4, temperature=0.0)
    key = api_key_create(user=user, name="k")[1]
    body = {"model": f"app:{app.slug}", "messages": [{"role": "user", "content": "Ahoy?"}]}
    first, again = call(client, key, body).json(), call(client, key, body).json()
    assert first["usage"]["completion_tokens"] == 4 and first["choices"][0]["finish_reason"] == "length"
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]  # temperature 0
    shorter = call(client, key, {**body, "max_tokens": 2}).json()
    assert shorter["usage"]["completion_tokens"] == 2 and shorter["choices"][0]["finish_reason"] == "length"


def test_apps_answer_on_chat_completions_only(client, store, user):
    key = api_key_create(user=user, name="k")[1]
    response = call(client, key, {"model": "app:chatbot", "prompt": "hi"}, url="/v1/completions")
    assert response.status_code == 400 and "chat/completions" in response.json()["error"]["message"]

"""OpenAI-compatible /v1: the official openai client against a live store, and the error contract."""

import json
import time
from datetime import timedelta

import openai
import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from apps.accounts.models import APIKey
from apps.accounts.services import api_key_create, api_key_hash, api_key_revoke
from apps.registry.services import model_version_register
from tests.factories import UserFactory
from tests.live import store_server
from tests.registry.test_services import make_source


@pytest.fixture
def key(user):
    return api_key_create(user=user, name="test")[1]


def auth(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def post(client, url, body, key):
    return client.post(url, data=json.dumps(body), content_type="application/json", **auth(key))


@pytest.mark.django_db(transaction=True)
def test_official_client_against_the_live_store(tiny_hf_dir, tmp_path):
    from apps.catalog.services import store_seed
    from apps.chat.models import AppRun

    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    store_seed()
    _, key = api_key_create(user=UserFactory(), name="client")
    with store_server(log_path=tmp_path / "store.log", INFERENCE_DTYPE="float32") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
        assert [m.id for m in client.models.list()] == ["smollm2-135m-instruct", "app:chatbot", "app:text-generator", "app:translator"]
        assert client.models.retrieve("smollm2-135m-instruct").owned_by == "system"

        messages = [{"role": "user", "content": "Say something."}]
        plain = client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, max_tokens=10, temperature=0, seed=1)
        assert plain.object == "chat.completion" and plain.choices[0].finish_reason == "length"
        assert plain.usage.completion_tokens == 10 and plain.usage.total_tokens == plain.usage.prompt_tokens + 10

        chunks = list(
            client.chat.completions.create(
                model="smollm2-135m-instruct", messages=messages, max_tokens=10, temperature=0, seed=1,
                stream=True, stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain.choices[0].message.content
        assert chunks[-1].usage.completion_tokens == 10 and chunks[-1].choices == []
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"

        # Streamed through the ASGI server as it is generated, not buffered to the end.
        started = time.monotonic()
        arrivals = [time.monotonic() - started for _ in client.chat.completions.create(
            model="smollm2-135m-instruct", messages=messages, max_tokens=200, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )]
        assert len(arrivals) > 100 and arrivals[0] < arrivals[-1] / 2, (arrivals[0], arrivals[-1])

        two = client.chat.completions.create(model="smollm2-135m-instruct@v1", messages=messages, max_tokens=6, n=2, temperature=1, seed=4)
        assert [c.index for c in two.choices] == [0, 1] and two.usage.completion_tokens == 12

        translated = client.chat.completions.create(model="app:translator", messages=[{"role": "user", "content": "Good morning"}],
                                                    max_tokens=4, extra_body={"target_language": "German"})
        assert translated.model == "app:translator" and 0 < translated.usage.completion_tokens <= 4
        assert AppRun.objects.filter(app__slug="translator", api_key__name="client").count() == 1
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="app:translator", messages=messages, extra_body={"target_language": "Klingon"})
        assert err.value.param == "target_language"

        # The native API streams an app's answer through the same ASGI server.
        import urllib.request

        run = urllib.request.Request(f"{url}/api/v1/apps/chatbot/runs/", method="POST",
                                     data=json.dumps({"message": "Say something.", "stream": True}).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(run, timeout=60) as response:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            events = [json.loads(line[6:]) for line in response.read().decode().splitlines() if line.startswith("data: ")]
        assert any(e.get("delta") for e in events) and events[-1]["done"] and events[-1]["conversation"]

        completion = client.completions.create(model="smollm2-135m-instruct", prompt="Once upon a time", max_tokens=5, temperature=0)
        assert completion.object == "text_completion" and completion.usage.completion_tokens == 5
        assert completion.choices[0].text

        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smollm2-135m-instruct", messages=[{"role": "user", "content": "word " * 600}], max_tokens=5)
        assert err.value.code == "context_length_exceeded"
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=messages)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="sk-store-bad").models.list()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "smollm2-135m-instruct"}, "messages"),
        ({"model": "smollm2-135m-instruct", "messages": []}, "messages"),
        ({"model": "smollm2-135m-instruct", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
        ({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, "temperature"),
        ({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "n": 50}, "n"),
        ({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "stop": [1, 2]}, "stop"),
        ({"model": "smollm2-135m-instruct@", "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ],
)
def test_malformed_requests_are_400_in_openai_shape(client, key, tiny_version, body, param):
    response = post(client, "/v1/chat/completions", body, key)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] == param


@pytest.mark.django_db
def test_broken_json_is_400(client, key):
    response = client.post("/v1/chat/completions", data="{not json", content_type="application/json", **auth(key))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


@pytest.mark.django_db
def test_every_v1_endpoint_needs_a_key(client, user, tiny_version):
    client.force_login(user)  # a browser session is not enough for /v1
    for method, url in [("get", "/v1/models"), ("get", "/v1/models/smollm2-135m-instruct"),
                        ("post", "/v1/chat/completions"), ("post", "/v1/completions")]:
        response = getattr(client, method)(url)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "invalid_api_key"


@pytest.mark.django_db
def test_revoked_and_expired_keys_get_401(client, user, tiny_version):
    row, raw = api_key_create(user=user, name="k")
    assert client.get("/v1/models", **auth(raw)).status_code == 200
    api_key_revoke(key=row)
    assert client.get("/v1/models", **auth(raw)).status_code == 401
    row, raw = api_key_create(user=user, name="old", expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/v1/models", **auth(raw)).status_code == 401


@pytest.mark.django_db
def test_keys_are_stored_hashed(user):
    row, raw = api_key_create(user=user, name="k")
    assert raw.startswith("sk-store-") and len(raw) > 40
    stored = APIKey.objects.filter(pk=row.pk).values().get()
    assert raw not in json.dumps(stored, default=str)
    assert stored["hashed_key"] == api_key_hash(raw) and stored["prefix"] == raw[:13]


@pytest.mark.django_db
def test_another_users_private_model_is_404(client, user, other_user, tiny_version, tmp_path):
    model_version_register(name="ft:smollm2-135m-instruct:private::ftjob-1", source_dir=make_source(tmp_path), owner=user)
    mine, theirs = api_key_create(user=user, name="a")[1], api_key_create(user=other_user, name="b")[1]
    assert "ft:smollm2-135m-instruct:private::ftjob-1" in [m["id"] for m in client.get("/v1/models", **auth(mine)).json()["data"]]
    assert "ft:smollm2-135m-instruct:private::ftjob-1" not in [m["id"] for m in client.get("/v1/models", **auth(theirs)).json()["data"]]
    assert client.get("/v1/models/ft:smollm2-135m-instruct:private::ftjob-1", **auth(theirs)).status_code == 404
    body = {"model": "ft:smollm2-135m-instruct:private::ftjob-1", "messages": [{"role": "user", "content": "hi"}]}
    response = post(client, "/v1/chat/completions", body, theirs)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


@pytest.mark.django_db
def test_createapikey_prints_the_key_alone(user, capsys):
    call_command("createapikey", user.username, name="deploy")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("sk-store-")
    assert APIKey.objects.get(user=user).name == "deploy"


def test_createapikey_unknown_user_exits_1(db):
    import subprocess
    import sys

    from tests.live import ROOT, live_env

    proc = subprocess.run([sys.executable, "manage.py", "createapikey", "nobody"], cwd=ROOT, env=live_env(), capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == "" and "nobody" in proc.stderr

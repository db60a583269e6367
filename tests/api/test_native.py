"""The native API (/api/v1): what each resource does, its pagination, its limits and its errors."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.accounts.services import api_key_create, api_key_revoke
from apps.catalog.models import Category
from apps.chat.models import AppRun
from apps.registry.models import ModelAliasMove
from apps.registry.services import model_version_register
from tests.catalog.conftest import make_app
from tests.tuning.test_jobs import chat_lines

pytestmark = pytest.mark.django_db


class API:
    """The test client with a key, JSON in and out."""

    def __init__(self, client, key):
        self.client, self.headers = client, {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    def __getattr__(self, method):
        def call(url, body=None, **extra):
            if body is not None:
                extra |= {"data": json.dumps(body), "content_type": "application/json"}
            return getattr(self.client, method)(url, **self.headers, **extra)

        return call


@pytest.fixture
def api(client, user):
    return API(client, api_key_create(user=user, name="tests")[1])


@pytest.fixture
def their_api(client, other_user):
    return API(client, api_key_create(user=other_user, name="theirs")[1])


def error(response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:400])
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return body


def sse(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/event-stream")
    text = b"".join(response.streaming_content).decode()
    return [json.loads(chunk[6:]) for chunk in text.split("\n\n") if chunk.startswith("data: ")]


def test_build_publish_and_find_an_app(api, their_api, store, user):
    body = {"name": "Haiku Maker", "short_description": "Writes haiku", "kind": "generator", "category": "writing",
            "prompt_template": "Write a haiku about {topic} in a {mood} mood.", "temperature": 0.3,
            "conversation_starters": ["Autumn"], "instructions": "SECRET: five, seven, five."}
    created = api.post("/api/v1/apps/", body)
    assert created.status_code == 201, created.content
    app = created.json()
    assert app["slug"] == "haiku-maker" and app["model_id"] == "app:haiku-maker" and app["visibility"] == "private"
    assert [f["name"] for f in app["input_fields"]] == ["topic", "mood"] and app["creator"] == user.username
    assert app["instructions"] == "SECRET: five, seven, five." and app["model"] == "smollm2-135m-instruct@latest"

    # A draft is its creator's alone.
    error(their_api.get("/api/v1/apps/haiku-maker/"), 404)
    assert "haiku-maker" not in [a["slug"] for a in api.get("/api/v1/apps/").json()["results"]]
    assert [a["slug"] for a in api.get("/api/v1/apps/?mine=true").json()["results"]] == ["haiku-maker"]

    # PATCH changes what it names and keeps the rest; each save is a version, and an old one can be restored.
    patched = api.patch("/api/v1/apps/haiku-maker/", {"short_description": "Haiku on demand", "temperature": 0.9}).json()
    assert patched["short_description"] == "Haiku on demand" and patched["temperature"] == 0.9
    assert patched["conversation_starters"] == ["Autumn"] and patched["category"] == "writing" and patched["kind"] == "generator"
    versions = api.get("/api/v1/apps/haiku-maker/versions/").json()["results"]
    assert [v["number"] for v in versions] == [2, 1] and versions[1]["settings"]["temperature"] == 0.3
    restored = api.post("/api/v1/apps/haiku-maker/versions/1/restore/").json()
    assert restored["temperature"] == 0.3 and restored["short_description"] == "Writes haiku"
    error(api.post("/api/v1/apps/haiku-maker/versions/9/restore/"), 404)

    published = api.post("/api/v1/apps/haiku-maker/publish/", {"visibility": "public"}).json()
    assert published["visibility"] == "public" and published["published_at"]
    seen = their_api.get("/api/v1/apps/haiku-maker/").json()
    assert seen["instructions"] is None and seen["prompt_template"] is None  # the creator's secret stays on the server
    assert seen["rating"] == {"average": None, "count": 0}

    def slugs(query):
        response = their_api.get(f"/api/v1/apps/?{query}")
        assert response.status_code == 200, response.content
        return [a["slug"] for a in response.json()["results"]]

    assert "haiku-maker" in slugs("q=haiku") and slugs("q=zzzxq") == []
    assert "haiku-maker" in slugs("category=writing") and "haiku-maker" not in slugs("category=coding")
    assert slugs("kind=translator") == ["translator"] and "haiku-maker" in slugs("kind=generator")
    assert slugs(f"creator={user.username}") == ["haiku-maker"]
    assert "haiku-maker" not in slugs("featured=true")
    assert error(their_api.get("/api/v1/apps/?kind=poem"), 400)["param"] == "kind"
    assert {c["slug"] for c in their_api.get("/api/v1/categories/").json()} == set(Category.objects.values_list("slug", flat=True))

    # Others see it now, but can neither change nor delete it: 403, not 404.
    assert error(their_api.patch("/api/v1/apps/haiku-maker/", {"name": "Mine now"}), 403)["code"] == "not_owner"
    assert error(their_api.delete("/api/v1/apps/haiku-maker/"), 403)["code"] == "not_owner"
    remix = their_api.post("/api/v1/apps/haiku-maker/remix/")
    assert remix.status_code == 201 and remix.json()["visibility"] == "private" and remix.json()["creator"] != user.username
    assert api.delete("/api/v1/apps/haiku-maker/").status_code == 204
    error(api.get("/api/v1/apps/haiku-maker/"), 404)


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"short_description": "no name"}, 400, "name"),
        ({"name": "X", "short_description": "Y", "temperature": "hot"}, 400, "temperature"),
        ({"name": "X", "short_description": "Y", "temperature": 9}, 400, "temperature"),
        ({"name": "X", "short_description": "Y", "max_tokens": -1}, 400, "max_tokens"),
        ({"name": "X", "short_description": "Y", "kind": "translator"}, 400, "kind"),
        ({"name": "X", "short_description": "Y", "category": "no-such"}, 400, "category"),
        ({"name": "X", "short_description": "Y", "conversation_starters": "hi"}, 400, "conversation_starters"),
        ({"name": "X", "short_description": "Y", "conversation_starters": ["a"] * 7}, 400, "conversation_starters"),
        ({"name": "X", "short_description": "Y", "kind": "generator", "prompt_template": "no fields"}, 400, "prompt_template"),
        ({"name": "X", "short_description": "Y", "kind": "generator", "prompt_template": "{Bad Name}"}, 400, "prompt_template"),
        ({"name": "X", "short_description": "Y", "model": "no-such-model"}, 404, "model"),
        ({"name": "X", "short_description": "Y", "model": "smollm2-135m-instruct@v9"}, 404, "model"),
        (["a", "list"], 400, None),
    ],
)
def test_bad_apps_are_refused_with_the_field_named(api, store, body, status, param):
    assert error(api.post("/api/v1/apps/", body), status)["param"] == param
    assert api.get("/api/v1/apps/?mine=true").json()["results"] == []


def test_cursor_pagination_walks_every_app_once(api, store, user):
    for i in range(23):
        make_app(user, name=f"App {i:02d}")
    seen, url, pages = [], "/api/v1/apps/?limit=10", 0
    while url and pages < 5:
        page = api.get(url).json()
        assert set(page) == {"next", "previous", "results"} and len(page["results"]) <= 10
        seen += [a["slug"] for a in page["results"]]
        url, pages = page["next"], pages + 1
    assert pages == 3 and len(seen) == len(set(seen)) == 26  # 23 apps and the 3 built-in ones
    assert len(api.get("/api/v1/apps/?limit=500").json()["results"]) == 26  # capped at 100, all fit
    assert error(api.get("/api/v1/apps/?cursor=garbage"), 404)["message"] == "Invalid cursor"


def test_search_results_page_by_relevance(api, store, user, django_assert_max_num_queries):
    for i in range(12):
        make_app(user, name=f"Garden {i:02d}" if i % 2 else f"Helper {i:02d}", short_description=f"Tends the garden, tip {i}")
    seen, url = [], "/api/v1/apps/?q=garden&limit=5"
    for _ in range(4):  # bounded: a cursor that repeats pages must fail, not loop
        with django_assert_max_num_queries(8):  # a page is a few queries, not one per app
            page = api.get(url).json()
        seen += [a["slug"] for a in page["results"]]
        url = page["next"]
        if url is None:
            break
    assert url is None and len(seen) == len(set(seen)) == 12
    from django.db import connection

    if connection.vendor == "postgresql":  # ranked: a name match (weight A) before a description match (B)
        assert all(slug.startswith("garden") for slug in seen[:6]) and all(slug.startswith("helper") for slug in seen[6:])
    mine = api.get("/api/v1/apps/?mine=true&limit=100")
    assert len(mine.json()["results"]) == 12


def test_run_apps_chat_with_history_and_stream(api, store, user, settings):
    bot = make_app(user, name="Echo Bot", temperature=0.0, max_tokens=6)
    first = api.post(f"/api/v1/apps/{bot.slug}/runs/", {"message": "Hello there"})
    assert first.status_code == 200, first.content
    answer = first.json()
    assert answer["text"] and answer["usage"]["completion_tokens"] > 0 and answer["finish_reason"] in ("stop", "length")
    conversation = answer["conversation"]
    again = api.post(f"/api/v1/apps/{bot.slug}/runs/", {"message": "And again", "conversation": conversation}).json()
    assert again["conversation"] == conversation
    messages = api.get(f"/api/v1/conversations/{conversation}/messages/").json()["results"]
    assert [(m["role"], m["content"]) for m in messages[::2]] == [("user", "Hello there"), ("user", "And again")]
    assert [m["content"] for m in messages[1::2]] == [answer["text"], again["text"]]
    listed = api.get(f"/api/v1/conversations/?app={bot.slug}").json()["results"]
    assert [c["id"] for c in listed] == [conversation] and listed[0]["title"] == "Hello there"
    assert api.patch(f"/api/v1/conversations/{conversation}/", {"title": "Renamed"}).json()["title"] == "Renamed"
    assert error(api.patch(f"/api/v1/conversations/{conversation}/", {"title": ""}), 400)["param"] == "title"

    # Streamed: the same greedy answer, piece by piece, then the usage.
    events = sse(api.post(f"/api/v1/apps/{bot.slug}/runs/", {"message": "Hello there", "stream": True}))
    assert "".join(e.get("delta", "") for e in events) == answer["text"]
    assert events[-1]["done"] and events[-1]["usage"] == answer["usage"]

    missing = error(api.post("/api/v1/apps/text-generator/runs/", {"fields": {"about": "tea"}}), 400)
    assert "topic" in missing["param"]
    generated = api.post("/api/v1/apps/text-generator/runs/", {"fields": {"topic": "Tea", "length": "short"}}).json()
    assert generated["text"] and generated["conversation"] is None
    translated = api.post("/api/v1/apps/translator/runs/", {"text": "Good morning", "source": "English", "target": "French"}).json()
    assert translated["text"] and translated["conversation"] is None
    assert error(api.post("/api/v1/apps/translator/runs/", {"text": "Hi", "source": "English", "target": "Klingon"}), 400)["param"] == "target"
    assert error(api.post(f"/api/v1/apps/{bot.slug}/runs/", {"message": "x", "conversation": 999999}), 404)["code"] == "conversation_not_found"
    assert error(api.post(f"/api/v1/apps/{bot.slug}/runs/", {"message": ["not", "text"]}), 400)["param"] == "message"

    # Every run is recorded with the key that made it; usage adds them up.
    runs = api.get("/api/v1/runs/").json()["results"]
    assert len(runs) == 5 and {r["api_key"] for r in runs} == {"tests"}
    assert [r["app"] for r in api.get(f"/api/v1/runs/?app={bot.slug}").json()["results"]] == [bot.slug] * 3
    usage = api.get("/api/v1/usage/").json()
    assert usage["requests"] == 5 and usage["completion_tokens"] == sum(r["completion_tokens"] for r in runs)
    assert usage["by_key"][0]["name"].startswith("tests (") and usage["by_key"][0]["requests"] == 5
    assert api.delete(f"/api/v1/conversations/{conversation}/").status_code == 204
    assert AppRun.objects.filter(user=user).count() == 5  # usage outlives the conversation


def test_runs_count_against_the_limits(api, store, settings):
    settings.RATE_LIMIT_KEY_REQUESTS = 1
    assert api.post("/api/v1/apps/chatbot/runs/", {"message": "hi"}).status_code == 200
    refused = api.post("/api/v1/apps/chatbot/runs/", {"message": "hi"})
    assert error(refused, 429)["code"] == "rate_limit_exceeded"
    assert int(refused["Retry-After"]) >= 1 and refused["x-ratelimit-remaining-requests"] == "0"


def test_reviews(api, their_api, store, user, other_user):
    app = make_app(other_user, name="Their App")
    url = f"/api/v1/apps/{app.slug}/reviews/"
    assert api.post(url, {"rating": 4, "text": "Nice"}).json()["rating"] == 4
    assert api.post(url, {"rating": 2}).json()["rating"] == 2  # the second review replaces the first
    reviews = their_api.get(url).json()["results"]
    assert [(r["user"], r["rating"]) for r in reviews] == [(user.username, 2)]
    assert api.get(f"/api/v1/apps/{app.slug}/").json()["rating"] == {"average": 2.0, "count": 1}
    assert error(their_api.post(url, {"rating": 5}), 409)["code"] == "conflict"  # not on one's own app
    assert error(api.post(url, {"rating": 6}), 400)["param"] == "rating"
    assert error(api.post(url, {"rating": "five"}), 400)["param"] == "rating"
    assert api.delete(url).status_code == 204
    assert error(api.delete(url), 404)["code"] == "review_not_found"
    assert error(api.post(f"/api/v1/apps/{app.slug}/report/", {"reason": "boring"}), 400)["param"] == "reason"


def test_files_and_jobs(api, store, user, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.TRAINING_FILE_MAX_BYTES = 50_000

    def upload(content: bytes, name="data.jsonl"):
        return api.post("/api/v1/files/", data={"file": SimpleUploadedFile(name, content)})

    assert error(upload(b"x" * 60_000), 413)["code"] == "file_too_large"
    assert error(api.post("/api/v1/files/", data={}), 400)["param"] == "file"
    created = upload(chat_lines().encode())
    assert created.status_code == 201
    f = created.json()
    assert f["id"].startswith("file-") and f["status"] == "uploaded" and f["bytes"] == len(chat_lines().encode())
    assert b"".join(api.get(f"/api/v1/files/{f['id']}/content/").streaming_content) == chat_lines().encode()
    assert [x["id"] for x in api.get("/api/v1/files/").json()["results"]] == [f["id"]]

    # Accepted before its file is checked (as OpenAI's): it waits in validating_files, its `auto` not chosen yet.
    waiting = api.post("/api/v1/jobs/", {"training_file": f["id"], "metadata": {"team": "sea"}})
    assert waiting.status_code == 201, waiting.content
    waiting = waiting.json()
    assert waiting["status"] == "validating_files" and waiting["hyperparameters"]["n_epochs"] == "auto" and waiting["estimate"] == {}
    assert waiting["metadata"] == {"team": "sea"} and waiting["estimated_finish"] is None
    from apps.tuning.models import TrainingFile
    from apps.tuning.services import finetune_jobs_start_waiting, training_file_validate

    # What the validation task does: check the file, then send the jobs that waited for it.
    checked = training_file_validate(file_id=TrainingFile.objects.get(public_id=f["id"]).pk)
    assert finetune_jobs_start_waiting(training_file=checked) == [waiting["id"]]
    sent = api.get(f"/api/v1/jobs/{waiting['id']}/").json()
    assert sent["hyperparameters"]["n_epochs"] == 5 and sent["estimate"]["steps"] == 30 and sent["status"] == "validating_files"
    assert [j["id"] for j in api.get("/api/v1/jobs/?metadata[team]=sea").json()["results"]] == [waiting["id"]]
    assert api.get("/api/v1/jobs/?metadata[team]=land").json()["results"] == []
    assert api.post(f"/api/v1/jobs/{waiting['id']}/cancel/").json()["status"] == "cancelled"
    assert api.get(f"/api/v1/files/{f['id']}/").json()["status"] == "processed"
    assert error(api.post("/api/v1/jobs/", {"training_file": f["id"], "method": "rlhf"}), 400)["param"] == "method"
    assert error(api.post("/api/v1/jobs/", {"training_file": f["id"], "hyperparameters": {"n_epochs": 0}}), 400)["param"] == "hyperparameters.n_epochs"
    assert error(api.post("/api/v1/jobs/", {"training_file": f["id"], "model": "no-such"}), 404)["code"] == "model_not_found"
    assert error(api.post("/api/v1/jobs/", {"training_file": "file-000"}), 404)["param"] == "training_file"
    job = api.post("/api/v1/jobs/", {"training_file": f["id"], "method": "full", "suffix": "Pirate Talk", "seed": 3})
    assert job.status_code == 201, job.content
    job = job.json()
    assert job["status"] == "validating_files" and job["method"] == "full" and job["suffix"] == "pirate-talk"
    assert job["hyperparameters"]["n_epochs"] == 5 and job["estimate"]["steps"] == 30 and job["fine_tuned_model"] is None
    events = api.get(f"/api/v1/jobs/{job['id']}/events/").json()["results"]
    assert events[0]["message"].startswith(f"Created fine-tuning job {job['id']}")
    assert api.get(f"/api/v1/jobs/{job['id']}/metrics/").json()["results"] == []
    assert [j["id"] for j in api.get("/api/v1/jobs/?status=validating_files").json()["results"]] == [job["id"]]
    assert api.get("/api/v1/jobs/?status=succeeded").json()["results"] == []
    assert api.post(f"/api/v1/jobs/{job['id']}/cancel/").json()["status"] == "cancelled"
    assert error(api.delete(f"/api/v1/files/{f['id']}/"), 409)["code"] == "conflict"


def test_models_versions_and_aliases(api, their_api, store, user, tiny_hf_dir):
    name = "ft:smollm2-135m-instruct:me::ftjob-abc"
    model_version_register(name=name, source_dir=tiny_hf_dir, owner=user)
    model_version_register(name=name, source_dir=tiny_hf_dir, owner=user)
    names = [m["name"] for m in api.get("/api/v1/models/").json()["results"]]
    assert names == sorted(names) and {"smollm2-135m-instruct", name} <= set(names)
    assert name not in [m["name"] for m in their_api.get("/api/v1/models/").json()["results"]]
    detail = api.get(f"/api/v1/models/{name}/").json()
    assert detail["owner"] == user.username and detail["aliases"] == {"latest": 2} and detail["visibility"] == "private"
    versions = api.get(f"/api/v1/models/{name}/versions/").json()["results"]
    assert [v["number"] for v in versions] == [2, 1] and versions[0]["aliases"] == ["latest"]
    assert versions[0]["reference"] == f"{name}@v2" and "model.safetensors" in versions[0]["checksums"]
    assert api.get(f"/api/v1/models/{name}/versions/1/").json()["aliases"] == []
    error(api.get(f"/api/v1/models/{name}/versions/7/"), 404)

    moved = api.put(f"/api/v1/models/{name}/aliases/prod/", {"version": 1})
    assert moved.status_code == 200 and moved.json()["version"] == 1
    api.put(f"/api/v1/models/{name}/aliases/prod/", {"version": 2})
    assert {a["name"]: a["version"] for a in api.get(f"/api/v1/models/{name}/aliases/").json()} == {"latest": 2, "prod": 2}
    moves = api.get(f"/api/v1/models/{name}/alias-moves/").json()["results"]
    assert [(m["alias"], m["from_version"], m["to_version"], m["moved_by"]) for m in moves[:2]] == [
        ("prod", 1, 2, user.username), ("prod", None, 1, user.username)]
    assert error(api.put(f"/api/v1/models/{name}/aliases/prod/", {"version": 5}), 404)["param"] == "version"
    assert error(api.put(f"/api/v1/models/{name}/aliases/prod/", {"version": "two"}), 400)["param"] == "version"
    assert error(api.put(f"/api/v1/models/{name}/aliases/Bad Alias/", {"version": 1}), 404)["code"] == "unknown_url"
    # The store's own model: visible to all, changed by nobody through the API.
    assert error(api.put("/api/v1/models/smollm2-135m-instruct/aliases/latest/", {"version": 1}), 403)["code"] == "not_owner"
    assert error(api.delete("/api/v1/models/smollm2-135m-instruct/"), 403)["code"] == "not_owner"
    assert ModelAliasMove.objects.filter(registered_model__name="smollm2-135m-instruct", moved_by=user).count() == 0

    make_app(user, name="On my model", model_reference=f"{name}@prod")
    assert error(api.delete(f"/api/v1/models/{name}/"), 409)["message"].startswith("Apps run on this model")


def test_requests_that_cannot_be_read(api, store):
    broken = api.client.post("/api/v1/apps/", data="{oops", content_type="application/json", **api.headers)
    assert error(broken, 400)["code"] == "invalid_json"
    assert error(api.client.post("/api/v1/apps/", data="<x/>", content_type="application/xml", **api.headers), 415)
    assert error(api.put("/api/v1/apps/chatbot/", {"name": "x"}), 405)
    assert error(api.get("/api/v1/nothing-here/"), 404)["code"] == "unknown_url"
    assert error(api.get("/v1/nothing-here"), 404)["code"] == "unknown_url"
    assert api.client.get("/nothing-here/").status_code == 404  # pages keep their HTML 404
    assert error(api.get("/api/v1/conversations/abc/"), 404)
    assert error(api.get("/api/v1/jobs/ftjob-0/"), 404)["code"] == "job_not_found"


def test_revoked_and_expired_keys_get_401(client, user, store):
    row, raw = api_key_create(user=user, name="k")
    assert API(client, raw).get("/api/v1/me/").json() == {"username": user.username, "email": user.email,
                                                          "date_joined": user.date_joined.isoformat().replace("+00:00", "Z"),
                                                          "key": "k"}
    api_key_revoke(key=row)
    assert error(API(client, raw).get("/api/v1/me/"), 401)["code"] == "invalid_api_key"
    _, old = api_key_create(user=user, name="old", expires_at=timezone.now() - timedelta(seconds=1))
    assert error(API(client, old).get("/api/v1/apps/"), 401)["code"] == "invalid_api_key"

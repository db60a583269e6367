"""Every endpoint of the schema, /api/v1 and /v1, walked by three callers: nobody (401), another user (404 on the
owner's objects, none of them in lists, nothing changed) and the owner (success). The walk must cover the schema
exactly, so a new endpoint fails this test until it is walked too."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.services import api_key_create
from apps.catalog.models import Review, StoreApp
from apps.chat.models import Conversation
from apps.feedback.models import Feedback
from apps.compare.models import Answer, Comparison, Vote
from apps.knowledge.models import KnowledgeFile
from apps.knowledge.services import knowledge_file_upload
from apps.registry.models import ModelAlias, RegisteredModel
from apps.registry.services import model_version_register
from apps.tuning import services as tuning
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.webhooks.models import WebhookEndpoint
from apps.webhooks.services import webhook_endpoint_create
from tests.catalog.conftest import make_app
from tests.tuning.test_jobs import chat_lines

pytestmark = pytest.mark.django_db

OWNED = 404  # what another user gets for the owner's objects: no hint that they exist


@dataclass
class Call:
    method: str
    route: str  # as the schema writes it
    params: dict = field(default_factory=dict)
    body: dict | None = None
    query: dict | None = None
    owner: int = 200
    other: int | None = OWNED  # None: the call is the other user's own business (a list, a create): checked apart
    other_params: dict | None = None
    multipart: bool = False

    def url(self, params) -> str:
        return self.route.format(**params)


def schema_operations(client) -> set[tuple[str, str]]:
    paths = yaml.safe_load(client.get("/api/schema/").content)["paths"]
    return {(method.upper(), path) for path, ops in paths.items() for method in ops if path.startswith(("/api/v1/", "/v1/"))}


def send(client, call: Call, key: str | None, params: dict):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    url = call.url(params)
    if call.query:
        url += "?" + "&".join(f"{k}={v}" for k, v in call.query.items())
    method = getattr(client, call.method.lower())
    if call.multipart:
        body = dict(call.body or {})
        body["file"] = SimpleUploadedFile("data.jsonl", chat_lines().encode())
        response = method(url, data=body, **headers)
    elif call.body is not None:
        response = method(url, data=json.dumps(call.body), content_type="application/json", **headers)
    else:
        response = method(url, **headers)
    if response.streaming:
        response.content_bytes = b"".join(response.streaming_content)
    return response


def error_of(response) -> dict:
    error = json.loads(getattr(response, "content_bytes", None) or response.content)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


@pytest.fixture
def world(store, user, other_user, tiny_hf_dir, settings, tmp_path):
    """The owner's things: a private app with history, a conversation, a run, files, a job and a fine-tune."""
    settings.MEDIA_ROOT = tmp_path / "media"
    app = make_app(user, name="Secret Garden", visibility="private")
    from apps.catalog.services import app_update

    app_update(app=app, user=user, data={**{f: getattr(app, f) for f in ("name", "short_description", "kind", "model_reference")},
                                         "conversation_starters": ["Hi"], "temperature": 0.0, "max_tokens": 4})
    conversation = Conversation.objects.create(app=app, user=user, title="Garden talk")
    conversation.messages.create(role="user", content="hello")
    answer = conversation.messages.create(role="assistant", content="Hello from the garden")
    feedback = Feedback.objects.create(user=user, app=app, message=answer, rating="up")

    def processed_file():
        f = tuning.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))
        f.status, f.format, f.example_count, f.token_count = "processed", "chat", 24, 600
        f.save()
        return f

    used, spare = processed_file(), processed_file()
    job = tuning.finetune_job_create(owner=user, training_file=used, model="smollm2-135m-instruct")
    ft_name = f"ft:smollm2-135m-instruct:{user.slug}::{job.public_id}"
    model_version_register(name=ft_name, source_dir=tiny_hf_dir, owner=user)
    spare_ft = f"ft:smollm2-135m-instruct:{user.slug}:spare:{job.public_id}"
    model_version_register(name=spare_ft, source_dir=tiny_hf_dir, owner=user)
    model_version_register(name=ft_name, source_dir=tiny_hf_dir, owner=user)  # v2: latest moves to it
    keys = {"owner": api_key_create(user=user, name="owner")[1], "other": api_key_create(user=other_user, name="other")[1]}
    knowledge = knowledge_file_upload(app=app, user=user, upload=SimpleUploadedFile("garden.md", b"# Roses\n\nPrune in March."))
    settings.WEBHOOK_ALLOWED_NETWORKS, settings.WEBHOOK_ALLOW_HTTP = ["127.0.0.0/8"], True
    hook, _ = webhook_endpoint_create(owner=user, url="http://127.0.0.1:9/hook", description="Garden hook")
    comparison = Comparison.objects.create(owner=user, kind="model", messages=[{"role": "user", "content": "Hi"}])
    Answer.objects.bulk_create(Answer(comparison=comparison, side=side, entry=ref, reference=ref, label=ref, text="Hello",
                                      finish_reason="stop", started_at=comparison.created_at, finished_at=comparison.created_at)
                               for side, ref in (("a", f"{ft_name}@v1"), ("b", f"{ft_name}@v2")))
    return {"feedback": feedback, "comparison": comparison.pk, "knowledge": knowledge.pk, "hook": hook.public_id, "app": app, "conversation": conversation, "file": spare, "used_file": used, "job": job, "ft": ft_name, "spare_ft": spare_ft, "keys": keys}


def plan(w) -> list[Call]:
    slug, conv, f, job, ft = w["app"].slug, w["conversation"].pk, w["file"].public_id, w["job"].public_id, w["ft"]
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "temperature": 0}
    mine = {"slug": slug}
    return [
        # /api/v1: the catalog and the owner's app
        Call("GET", "/api/v1/apps/", query={"mine": "true"}, other=None),
        Call("POST", "/api/v1/apps/", body={"name": "Fresh", "short_description": "New"}, owner=201, other=None),
        Call("GET", "/api/v1/apps/{slug}/", mine),
        Call("PATCH", "/api/v1/apps/{slug}/", mine, body={"name": "Renamed Garden"}),
        Call("GET", "/api/v1/apps/{slug}/versions/", mine),
        Call("POST", "/api/v1/apps/{slug}/versions/{number}/restore/", {"slug": slug, "number": 1}),
        Call("POST", "/api/v1/apps/{slug}/runs/", mine, body={"message": "Hello garden"}),
        Call("POST", "/api/v1/apps/{slug}/remix/", mine, owner=201),
        Call("POST", "/api/v1/apps/{slug}/report/", mine, body={"reason": "spam"}, owner=201),
        # Reviews: the owner reviews a built-in app (nobody reviews their own); the other user may not touch it.
        Call("POST", "/api/v1/apps/{slug}/reviews/", {"slug": "chatbot"}, body={"rating": 4, "text": "Good"},
             other_params=mine),
        Call("GET", "/api/v1/apps/{slug}/reviews/", {"slug": "chatbot"}, other_params=mine),
        Call("POST", "/api/v1/apps/{slug}/publish/", mine, body={"visibility": "link"}),
        # The app's knowledge files: its creator's alone
        Call("GET", "/api/v1/apps/{slug}/knowledge/", mine),
        Call("POST", "/api/v1/apps/{slug}/knowledge/", mine, body={}, multipart=True, owner=201),
        Call("GET", "/api/v1/apps/{slug}/knowledge/{id}/", {"slug": slug, "id": w["knowledge"]}),
        Call("GET", "/api/v1/categories/", other=None),
        Call("GET", "/api/v1/runs/", other=None),
        Call("GET", "/api/v1/conversations/", other=None),
        Call("GET", "/api/v1/conversations/{id}/", {"id": conv}),
        Call("GET", "/api/v1/conversations/{id}/messages/", {"id": conv}),
        Call("PATCH", "/api/v1/conversations/{id}/", {"id": conv}, body={"title": "Roses"}),
        # Feedback on answers: the rater's alone
        Call("GET", "/api/v1/feedback/", other=None),
        Call("POST", "/api/v1/feedback/", body={"message": w["feedback"].message_id, "rating": "down", "correction": "Better"}),
        Call("GET", "/api/v1/feedback/{id}/", {"id": w["feedback"].pk}),
        Call("PATCH", "/api/v1/feedback/{id}/", {"id": w["feedback"].pk}, body={"rating": "up"}),
        Call("POST", "/api/v1/feedback/export/", body={}, owner=400, other=None),  # one rated answer: too few
        # Customization
        Call("GET", "/api/v1/files/", other=None),
        Call("POST", "/api/v1/files/", body={}, multipart=True, owner=201, other=None),
        Call("GET", "/api/v1/files/{id}/", {"id": f}),
        Call("GET", "/api/v1/files/{id}/content/", {"id": f}),
        Call("GET", "/api/v1/jobs/", other=None),
        Call("POST", "/api/v1/jobs/", body={"training_file": w["used_file"].public_id, "hyperparameters": {"n_epochs": 1}},
             owner=201, other=OWNED),
        Call("GET", "/api/v1/jobs/{id}/", {"id": job}),
        Call("GET", "/api/v1/jobs/{id}/events/", {"id": job}),
        Call("GET", "/api/v1/jobs/{id}/metrics/", {"id": job}),
        Call("GET", "/api/v1/jobs/{id}/checkpoints/", {"id": job}),
        # Registry
        Call("GET", "/api/v1/models/", other=None),
        Call("GET", "/api/v1/models/{name}/", {"name": ft}),
        Call("GET", "/api/v1/models/{name}/versions/", {"name": ft}),
        Call("GET", "/api/v1/models/{name}/versions/{number}/", {"name": ft, "number": 1}),
        Call("GET", "/api/v1/models/{name}/aliases/", {"name": ft}),
        Call("PUT", "/api/v1/models/{name}/aliases/{alias}/", {"name": ft, "alias": "latest"}, body={"version": 1}),
        Call("GET", "/api/v1/models/{name}/alias-moves/", {"name": ft}),
        # Webhooks
        Call("GET", "/api/v1/webhooks/", other=None),
        Call("POST", "/api/v1/webhooks/", body={"url": "http://127.0.0.1:9/new"}, owner=201, other=None),
        Call("GET", "/api/v1/webhooks/{id}/", {"id": w["hook"]}),
        Call("PATCH", "/api/v1/webhooks/{id}/", {"id": w["hook"]}, body={"description": "Renamed hook"}),
        Call("GET", "/api/v1/webhooks/{id}/deliveries/", {"id": w["hook"]}),
        Call("POST", "/api/v1/webhooks/{id}/rotate-secret/", {"id": w["hook"]}, body={}),
        # Comparisons (made on /compare/), votes and the leaderboard: the owner's alone
        Call("GET", "/api/v1/comparisons/", other=None),
        Call("GET", "/api/v1/comparisons/{id}/", {"id": w["comparison"]}),
        Call("POST", "/api/v1/votes/", body={"comparison": w["comparison"], "outcome": "b"}, owner=201),
        Call("GET", "/api/v1/votes/", other=None),
        Call("GET", "/api/v1/leaderboard/", other=None),
        Call("GET", "/api/v1/usage/", other=None),
        Call("GET", "/api/v1/me/", other=None),
        # /v1, OpenAI's face
        Call("GET", "/v1/models", other=None),
        Call("GET", "/v1/models/{model_id}", {"model_id": ft}),
        Call("POST", "/v1/chat/completions", body={"model": ft, **chat}),
        Call("POST", "/v1/completions", body={"model": ft, "prompt": "Once", "max_tokens": 2, "temperature": 0}),
        Call("GET", "/v1/files", other=None),
        Call("POST", "/v1/files", body={"purpose": "fine-tune"}, multipart=True, other=None),
        Call("GET", "/v1/files/{file_id}", {"file_id": f}),
        Call("GET", "/v1/files/{file_id}/content", {"file_id": f}),
        Call("GET", "/v1/fine_tuning/jobs", other=None),
        Call("POST", "/v1/fine_tuning/jobs", body={"model": "smollm2-135m-instruct", "training_file": w["used_file"].public_id}),
        Call("GET", "/v1/fine_tuning/jobs/{job_id}", {"job_id": job}),
        Call("GET", "/v1/fine_tuning/jobs/{job_id}/events", {"job_id": job}),
        Call("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints", {"job_id": job}),
        Call("POST", "/v1/fine_tuning/jobs/{job_id}/cancel", {"job_id": job}),
        Call("POST", "/api/v1/jobs/{id}/cancel/", {"id": job}, owner=409),  # cancelled just above, by /v1
        # Deletions last
        Call("DELETE", "/api/v1/apps/{slug}/reviews/", {"slug": "chatbot"}, owner=204, other_params=mine),
        Call("DELETE", "/api/v1/feedback/{id}/", {"id": w["feedback"].pk}, owner=204),
        Call("DELETE", "/api/v1/conversations/{id}/", {"id": conv}, owner=204),
        Call("DELETE", "/v1/files/{file_id}", {"file_id": f}),
        Call("DELETE", "/api/v1/files/{id}/", {"id": w["used_file"].public_id}, owner=409),  # jobs refer to it
        Call("DELETE", "/api/v1/models/{name}/", {"name": ft}, owner=204),
        Call("DELETE", "/v1/models/{model_id}", {"model_id": w["spare_ft"]}),
        Call("DELETE", "/api/v1/apps/{slug}/knowledge/{id}/", {"slug": slug, "id": w["knowledge"]}, owner=204),
        Call("DELETE", "/api/v1/apps/{slug}/", mine, owner=204),
        Call("DELETE", "/api/v1/webhooks/{id}/", {"id": w["hook"]}, owner=204),
    ]


def test_every_endpoint_by_nobody_another_user_and_the_owner(client, world, user, other_user, settings):
    settings.QUOTA_ACTIVE_JOBS = 10
    calls = plan(world)
    walked = {(c.method, c.route) for c in calls}
    assert walked == schema_operations(client), "walk every endpoint of the schema, and only those"

    # Nobody: every endpoint needs a key or a session (only /healthz, the docs and the pages are open).
    for call in calls:
        params = call.params or {}
        response = send(client, call, None, params)
        assert response.status_code == 401, (call.route, response.status_code)
        assert error_of(response)["code"] in ("invalid_api_key", "not_authenticated")

    # Another user: the owner's objects are 404, and no list shows them.
    other_key = world["keys"]["other"]
    for call in calls:
        if call.other is None:
            continue
        response = send(client, call, other_key, call.other_params or call.params)
        assert response.status_code == call.other, (call.method, call.route, response.status_code, response.content[:300])
        error_of(response)
    owner_ids = {world["app"].slug, world["file"].public_id, world["used_file"].public_id, world["job"].public_id, world["ft"], world["spare_ft"],
                 str(world["conversation"].pk), f"app:{world['app'].slug}", world["hook"], str(world["comparison"])}
    for call in calls:
        if call.other is None and call.method == "GET":
            body = send(client, call, other_key, call.params).content.decode()
            leaked = [i for i in owner_ids if f'"{i}"' in body or f'"id":{i}' in body.replace(" ", "")]
            assert leaked == [], (call.route, leaked)
    # ... and changed nothing.
    app = StoreApp.objects.get(pk=world["app"].pk)
    assert app.name == "Secret Garden" and app.visibility == "private" and app.versions.count() == 2
    assert Conversation.objects.get(pk=world["conversation"].pk).title == "Garden talk"
    assert Feedback.objects.get(pk=world["feedback"].pk).rating == "up" and not Feedback.objects.filter(user=other_user).exists()
    assert FineTuningJob.objects.get(pk=world["job"].pk).status == "validating_files"
    assert FineTuningJob.objects.filter(owner=other_user).count() == 0
    assert TrainingFile.objects.filter(pk=world["file"].pk).exists()
    assert ModelAlias.objects.get(registered_model__name=world["ft"], name="latest").version.number == 2
    assert not Review.objects.filter(user=other_user).exists()
    assert list(KnowledgeFile.objects.values_list("app", flat=True)) == [world["app"].pk]
    assert WebhookEndpoint.objects.get(public_id=world["hook"]).description == "Garden hook"
    assert not Vote.objects.exists()

    # The owner: each call does what it says.
    owner_key = world["keys"]["owner"]
    for call in calls:
        response = send(client, call, owner_key, call.params)
        assert response.status_code == call.owner, (call.method, call.route, response.status_code, response.content[:300])
        if response.status_code >= 400:
            error_of(response)
    assert not StoreApp.objects.filter(pk=world["app"].pk).exists()
    assert not RegisteredModel.objects.filter(name__in=[world["ft"], world["spare_ft"]]).exists()
    assert FineTuningJob.objects.get(pk=world["job"].pk).status == "cancelled"
    assert not Conversation.objects.filter(pk=world["conversation"].pk).exists()
    assert not WebhookEndpoint.objects.filter(public_id=world["hook"]).exists()
    assert Vote.objects.get(comparison_id=world["comparison"]).outcome == "b"


def test_a_browser_session_works_with_csrf(client, world, user):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    assert browser.get("/api/v1/me/").json()["username"] == user.username
    url = f"/api/v1/conversations/{world['conversation'].pk}/"
    response = browser.patch(url, data=json.dumps({"title": "x"}), content_type="application/json")
    assert response.status_code == 403 and "CSRF" in error_of(response)["message"]
    browser.get("/")  # sets the csrftoken cookie
    token = browser.cookies["csrftoken"].value
    response = browser.patch(url, data=json.dumps({"title": "With token"}), content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and response.json()["title"] == "With token"
    # A session does not open /v1: that face takes keys only, as OpenAI's.
    assert browser.get("/v1/models").status_code == 401

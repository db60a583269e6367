"""Classifier apps (issue 16): the model server's /v1/classify, the builder's rule (classifiers for classifier apps
only), runs from the page and /api/v1 (label and scores), /v1's 400 on a classifier, and another user's access.
The classifier is the tiny model under a new (untrained) head: a real forward pass, labels as the head gives them."""

import json

import pytest
from starlette.testclient import TestClient

from apps.accounts.services import api_key_create
from apps.catalog.models import StoreApp
from apps.core.errors import InvalidRequest
from apps.inference.local import LocalEngine
from apps.inference.server import create_app
from apps.registry.models import ModelVersion
from tests.catalog.conftest import make_app

LABELS = ["billing", "bug", "praise"]
TOKEN = "test-token"


@pytest.fixture
def classifier(store, user, tiny_hf_dir, tmp_path) -> ModelVersion:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from apps.registry.services import model_version_register

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_hf_dir, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)},
        pad_token_id=tokenizer.pad_token_id, use_safetensors=True)
    folder = tmp_path / "classifier"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return model_version_register(name=f"ft:smollm2-135m-instruct:{user.slug}:tickets:ftjob-x", source_dir=folder,
                                  owner=user, task=ModelVersion.Task.CLASSIFIER)


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='k')[1]}"}


def test_the_model_server_classifies_in_one_batch_and_refuses_the_wrong_endpoint(classifier, tiny_version, registry_root):
    engine = LocalEngine(dtype="float32", max_batch=2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with TestClient(create_app(engine, registry_root=registry_root, token=TOKEN)) as c:
            ref = classifier.reference
            answer = c.post("/v1/classify", json={"model": ref, "input": ["my invoice is wrong", "the app crashes"]}, headers=auth)
            assert answer.status_code == 200, answer.text
            data = answer.json()["data"]
            assert [d["index"] for d in data] == [0, 1]
            for d in data:
                assert list(d["scores"]) == LABELS and abs(sum(d["scores"].values()) - 1) < 1e-3
                assert d["label"] == max(d["scores"], key=d["scores"].get) and d["tokens"] > 0
            # One text alone gives the same scores as in the batch (padding does not change them).
            alone = c.post("/v1/classify", json={"model": ref, "input": "the app crashes"}, headers=auth).json()["data"][0]
            assert all(abs(alone["scores"][k] - data[1]["scores"][k]) < 1e-4 for k in LABELS)

            assert c.post("/v1/classify", json={"model": ref, "input": "x"}).status_code == 401
            empty = c.post("/v1/classify", json={"model": ref, "input": "   "}, headers=auth)
            assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
            long = c.post("/v1/classify", json={"model": ref, "input": "word " * 2000}, headers=auth)
            assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
            chat = c.post("/v1/chat/completions", json={"model": ref, "messages": [{"role": "user", "content": "hi"}]}, headers=auth)
            assert chat.status_code == 400 and "/v1/classify" in chat.json()["error"]["message"]
            wrong = c.post("/v1/classify", json={"model": tiny_version.reference, "input": "hi"}, headers=auth)
            assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "model_not_classifier"
    finally:
        engine.close()


def test_classifier_apps_label_text_on_the_page_and_api_v1_and_v1_says_where(classifier, user, other_user, client):
    # The builder's rule, on every face that saves an app.
    with pytest.raises(InvalidRequest, match="needs a classifier model"):
        make_app(user, name="Wrong", kind="classifier", model_reference="smollm2-135m-instruct@latest")
    with pytest.raises(InvalidRequest, match="is a classifier"):
        make_app(user, name="Wrong too", kind="chatbot", model_reference=f"{classifier.registered_model.name}@latest")
    client.force_login(user)
    page = client.get("/build/new/")
    assert b"Classifiers (for classifier apps)" in page.content and classifier.registered_model.name.encode() in page.content
    refused = client.post("/build/new/", {"name": "Mismatch", "short_description": "x", "kind": "chatbot",
                                         "model_reference": f"{classifier.registered_model.name}@latest",
                                         "temperature": 0.7, "top_p": 0.9, "max_tokens": 64, "repetition_penalty": 1.1})
    assert refused.status_code == 200 and b"cannot chat or generate" in refused.content

    app = make_app(user, name="Ticket Sorter", kind="classifier", instructions="", conversation_starters=[],
                   model_reference=f"{classifier.registered_model.name}@latest", visibility="private")
    assert app.kind == StoreApp.Kind.CLASSIFIER
    page = client.get(f"/apps/{app.address}/")
    assert page.status_code == 200 and b'class="classifier"' in page.content

    # The page's run: one JSON answer.
    answer = client.post(f"/apps/{app.slug}/run", data=json.dumps({"text": "I was charged twice"}), content_type="application/json")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["label"] in LABELS and list(body["scores"]) == LABELS and body["usage"]["prompt_tokens"] > 0
    empty = client.post(f"/apps/{app.slug}/run", data=json.dumps({"text": "  "}), content_type="application/json")
    assert empty.status_code == 400 and empty.json()["error"]["message"] == "Type a text to classify."

    # /api/v1: the same answer shape; empty and over-long input are 400s.
    key = bearer(user)
    client.logout()
    api = client.post(f"/api/v1/apps/{app.slug}/runs/", {"text": "The app crashes on start"}, content_type="application/json", **key)
    assert api.status_code == 200, api.content
    assert api.json()["label"] in LABELS and set(api.json()["scores"]) == set(LABELS)
    assert client.post(f"/api/v1/apps/{app.slug}/runs/", {"text": ""}, content_type="application/json", **key).status_code == 400
    long = client.post(f"/api/v1/apps/{app.slug}/runs/", {"text": "word " * 2000}, content_type="application/json", **key)
    assert long.status_code == 400 and "at most" in long.json()["error"]["message"]
    assert client.get(f"/api/v1/runs/?app={app.slug}", **key).json()["results"][0]["prompt_tokens"] > 0

    # /v1: a classifier (model or app) on chat/completions or completions is a 400 that names the endpoint.
    for path, payload in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                          ("/v1/completions", {"prompt": "hi"})):
        for model in (classifier.registered_model.name, f"app:{app.slug}"):
            refused = client.post(path, {"model": model, **payload}, content_type="application/json", **key)
            assert refused.status_code == 400, (path, model, refused.content)
            error = refused.json()["error"]
            assert error["type"] == "invalid_request_error" and "/api/v1/apps/" in error["message"], error

    # Another user can neither run the private app nor see or use the classifier.
    theirs = bearer(other_user)
    assert client.post(f"/api/v1/apps/{app.slug}/runs/", {"text": "hi"}, content_type="application/json", **theirs).status_code == 404
    assert client.get(f"/api/v1/models/{classifier.registered_model.name}/", **theirs).status_code == 404
    with pytest.raises(Exception):
        make_app(other_user, name="Stolen", kind="classifier", model_reference=f"{classifier.registered_model.name}@latest")
    client.force_login(other_user)
    assert client.post(f"/apps/{app.slug}/run", data=json.dumps({"text": "hi"}), content_type="application/json").status_code == 404

"""Issue 14: kept checkpoints callable by their `ckpt-step-N` ids, a retrain registered as v2 of the same model
(apps on `@latest` follow it, apps on `@v1` stay), a fine-tune of a LoRA fine-tune with its whole chain, and what
another user can do with none of them. Three real jobs on the tiny model, run by the runner in this process, in
one test: each job costs a trainer process, so the later steps build on the earlier ones' models."""

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.services import api_key_create
from apps.catalog.services import app_create, app_publish
from apps.chat.models import AppRun
from apps.core.errors import InvalidRequest, NotFound
from apps.registry.models import ModelAliasMove
from apps.tuning import services
from apps.tuning.models import FineTuningJob, JobCheckpoint
from apps.tuning.services.versions import CheckpointStorageExceeded
from tests.factories import UserFactory
from tests.tuning.test_jobs import chat_lines
from tests.tuning.test_runner import child_env  # noqa: F401 - the fixture: the trainer child's environment

BASE = "smollm2-135m-instruct"


def processed(user, n=12):
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("pirate.jsonl", chat_lines(n).encode()))
    return services.training_file_validate(file_id=f.pk)


def run(job) -> FineTuningJob:
    services.finetune_job_run(job_id=job.pk)  # what the gpu queue's task calls
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error_message, list(job.events.values_list("message", flat=True)))
    return job


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='k')[1]}"}


def chat(client, key, model):
    return client.post("/v1/chat/completions", {"model": model, "max_tokens": 4, "temperature": 0,
                                                "messages": [{"role": "user", "content": "Tell me about cats."}]},
                       content_type="application/json", **key)


def app_on(user, reference, name):
    app = app_create(user=user, data={"name": name, "short_description": "pinned", "kind": "chatbot",
                                      "instructions": "Be brief.", "model_reference": reference, "temperature": 0.0,
                                      "max_tokens": 4})
    return app_publish(app=app, user=user, visibility="private")


@pytest.fixture
def engine(settings):
    from apps.inference import services as inference

    settings.INFERENCE_DTYPE, settings.INFERENCE_QUANTIZE = "float32", "none"
    inference.engine_reset()
    yield
    inference.engine_reset()


def test_checkpoints_callable_a_retrain_becomes_v2_and_a_fine_tune_of_it_names_its_chain(setup, child_env, engine, client, settings):  # noqa: F811
    user, other = setup, UserFactory()
    key, others = bearer(user), bearer(other)
    data = processed(user)
    first = run(services.finetune_job_create(owner=user, training_file=data, validation_file=data, model=BASE,
                                             suffix="pirate", hyperparameters={"n_epochs": 2, "batch_size": 4}))
    name = first.fine_tuned_model
    assert first.result_version.number == 1

    # Kept checkpoints: one per epoch (3 steps each), models of their own with OpenAI's id and the step's metrics.
    kept = list(JobCheckpoint.objects.filter(job=first).order_by("step"))
    assert [(c.step, c.epoch) for c in kept] == [(3, 1), (6, 2)]
    assert all(c.model_version.registered_model.name == f"{name}:ckpt-step-{c.step}" for c in kept)
    assert all({"train_loss", "full_valid_loss", "train_mean_token_accuracy"} <= c.metrics.keys() for c in kept)
    ckpt = kept[0].model_version
    assert ckpt.registered_model.owner == user and ckpt.registered_model.visibility == "private"
    assert ckpt.kind == "lora" and ckpt.base_version == first.base_version
    assert not [p.name for p in ckpt.path.iterdir() if p.suffix in (".pt", ".pth", ".bin")]  # no pickle kept

    listed = client.get(f"/v1/fine_tuning/jobs/{first.public_id}/checkpoints", **key).json()
    assert [c["step_number"] for c in listed["data"]] == [6, 3] and not listed["has_more"]
    assert listed["first_id"] == listed["data"][0]["id"] and listed["last_id"] == listed["data"][-1]["id"]
    newest = listed["data"][0]
    assert newest["object"] == "fine_tuning.job.checkpoint" and newest["fine_tuning_job_id"] == first.public_id
    assert newest["fine_tuned_model_checkpoint"] == f"{name}:ckpt-step-6"
    assert newest["metrics"]["step"] == 6 and newest["metrics"]["train_loss"] == kept[1].metrics["train_loss"]
    native = client.get(f"/api/v1/jobs/{first.public_id}/checkpoints/", **key).json()
    assert [c["model"] for c in native["results"]] == [f"{name}:ckpt-step-3", f"{name}:ckpt-step-6"]

    # Called by its ckpt-step id on /v1; the run records that exact version.
    answer = chat(client, key, f"{name}:ckpt-step-3")
    assert answer.status_code == 200, answer.content
    assert answer.json()["model"] == f"{name}:ckpt-step-3"
    assert AppRun.objects.filter(user=user).latest("id").model == f"{name}:ckpt-step-3@v1"
    # Another user can neither call, list nor see them.
    assert chat(client, others, f"{name}:ckpt-step-3").status_code == 404
    assert client.get(f"/v1/fine_tuning/jobs/{first.public_id}/checkpoints", **others).status_code == 404
    assert client.get(f"/api/v1/jobs/{first.public_id}/checkpoints/", **others).status_code == 404
    assert f"{name}:ckpt-step-3" not in [m["id"] for m in client.get("/v1/models", **others).json()["data"]]

    # Apps pinned to the alias and to the version, before the retrain.
    on_latest, on_v1 = app_on(user, f"{name}@latest", "On latest"), app_on(user, f"{name}@v1", "On v1")

    # register_as onto another user's model, a base model or a checkpoint: refused in OpenAI's shape.
    theirs = processed(other)
    refused = client.post("/v1/fine_tuning/jobs", {"model": BASE, "training_file": theirs.public_id, "register_as": name},
                          content_type="application/json", **others)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "register_as"
    base = client.post("/v1/fine_tuning/jobs", {"model": BASE, "training_file": data.public_id, "register_as": BASE},
                       content_type="application/json", **key)
    assert base.status_code == 400 and base.json()["error"]["code"] == "invalid_register_as"
    with pytest.raises(InvalidRequest):
        services.finetune_job_create(owner=user, training_file=data, model=BASE, register_as=f"{name}:ckpt-step-3")
    with pytest.raises(NotFound):  # another user's checkpoint is not even a base to start from
        services.finetune_job_create(owner=other, training_file=theirs, model=f"{name}:ckpt-step-3")

    # The retrain, as the openai client sends it (register_as in extra_body): v2 of the same model, latest moved.
    created = client.post("/v1/fine_tuning/jobs", {"model": BASE, "training_file": data.public_id, "register_as": name,
                                                    "hyperparameters": {"n_epochs": 1, "batch_size": 4}},
                          content_type="application/json", **key)
    assert created.status_code == 200, created.content
    second = run(FineTuningJob.objects.get(public_id=created.json()["id"]))
    assert second.register_as.name == name and second.fine_tuned_model == name
    assert second.result_version.registered_model == first.result_version.registered_model
    assert second.result_version.number == 2
    # The evaluation gate (issue 15): 12 examples are too few to hold some out and the retrain has no validation
    # file, so it cannot be compared with v1: v2 is a candidate until its owner moves latest (here with the API).
    gate = second.evaluation["gate"]
    assert gate["passed"] is False and "no held-out data" in gate["reason"] and gate["compared_with"] == f"{name}@v1"
    assert client.get(f"/api/v1/models/{name}/aliases/", **key).json()[0]["version"] == 1
    moved = client.put(f"/api/v1/models/{name}/aliases/latest/", {"version": 2}, content_type="application/json", **key)
    assert moved.status_code == 200, moved.content
    move = ModelAliasMove.objects.filter(registered_model__name=name, alias="latest").first()
    assert (move.from_version.number, move.to_version.number) == (1, 2)  # rollback: one alias move away
    assert client.get(f"/api/v1/jobs/{second.public_id}/", **key).json()["result_version"] == f"{name}@v2"
    # Its checkpoints carry the job's own id: they never clash with the first job's.
    assert JobCheckpoint.objects.get(job=second).model_version.registered_model.name.endswith(
        f"{second.public_id}:ckpt-step-3")

    # The app on @latest answers with v2, the app on @v1 still with v1 (the run records the version that generated).
    for app, version in ((on_latest, 2), (on_v1, 1)):
        response = chat(client, key, f"app:{app.slug}")
        assert response.status_code == 200, response.content
        assert AppRun.objects.filter(app=app).latest("id").model == f"{name}@v{version}"

    # The account page shows the checkpoint storage; over the cap, a new job is refused with a clear message.
    client.force_login(user)
    page = client.get("/accounts/").content.decode()
    assert 'id="checkpoint-storage"' in page and "3 kept checkpoints" in page
    settings.QUOTA_CHECKPOINT_BYTES = 1
    with pytest.raises(CheckpointStorageExceeded, match="delete some checkpoint models"):
        services.finetune_job_create(owner=user, training_file=data, model=BASE)
    over = client.post("/v1/fine_tuning/jobs", {"model": BASE, "training_file": data.public_id},
                       content_type="application/json", **key)
    assert over.status_code == 429 and over.json()["error"]["code"] == "checkpoint_storage_exceeded"
    settings.QUOTA_CHECKPOINT_BYTES = 2**40

    # A fine-tune of the LoRA fine-tune (its v2): trained on the merged parent, an adapter on the parent adapter.
    other_data = processed(other)
    with pytest.raises(NotFound):  # another user's LoRA fine-tune is no base of theirs
        services.finetune_job_create(owner=other, training_file=other_data, model=name)
    child = run(services.finetune_job_create(owner=user, training_file=data, model=name, suffix="two",
                                             hyperparameters={"n_epochs": 1, "batch_size": 4}))
    version = child.result_version
    assert version.kind == "lora" and version.base_version == second.result_version
    base_ref, parent_ref = f"{BASE}@v1", f"{name}@v2"
    chain = [base_ref, parent_ref, f"{child.fine_tuned_model}@v1"]
    # The adapter names its parent adapter by reference: the model server loads the chain from its root.
    assert json.loads((version.path / "adapter_config.json").read_text())["base_model_name_or_path"] == parent_ref
    detail = client.get(f"/api/v1/models/{child.fine_tuned_model}/versions/1/", **key).json()
    assert detail["lineage"] == chain and detail["base"] == parent_ref
    assert " -> ".join(chain[:2] + [child.fine_tuned_model]) in (version.path / "README.md").read_text()  # its card
    page = client.get(f"/models/{child.fine_tuned_model}/").content.decode()
    cell = re.search(r'<td class="lineage">(.*?)</td>', page, re.DOTALL).group(1)
    assert cell.index(base_ref) < cell.index(parent_ref)  # the model page names the whole chain, root first
    # It answers: the local engine merges the base, the parent's adapter and its own.
    response = chat(client, key, child.fine_tuned_model)
    assert response.status_code == 200, response.content
    assert AppRun.objects.filter(user=user).latest("id").model == f"{child.fine_tuned_model}@v1"

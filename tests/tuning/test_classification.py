"""Method classification (issue 16): labelled-text files checked with line numbers, a job from /api/v1 and from the
customize page that registers a classifier (full weights, id2label in its config) which plain
AutoModelForSequenceClassification loads, and what another user can do with it (nothing)."""

import json
import random

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.services import api_key_create
from apps.tuning import services
from apps.tuning.hyperparameters import hyperparameters_resolve
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.trainer.data import MAX_LABEL_CHARS, MIN_PER_LABEL
from tests.factories import UserFactory
from tests.tuning.test_runner import child_env  # noqa: F401 - the fixture: the trainer child's environment

BASE = "smollm2-135m-instruct"
WORDS = {"billing": ["invoice", "refund", "charged", "payment"], "bug": ["crash", "error", "broken", "freezes"],
         "praise": ["love", "great", "thanks", "wonderful"]}


def ticket_lines(per_label: int = 8, seed: int = 0) -> str:
    rng = random.Random(seed)
    rows = [{"text": f"The {rng.choice(w)} thing, {rng.choice(w)} again", "label": label}
            for label, w in WORDS.items() for _ in range(per_label)]
    rng.shuffle(rows)
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def upload(user, content: str, name="tickets.jsonl"):
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile(name, content.encode()))
    return services.training_file_validate(file_id=f.pk)


def bearer(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='k')[1]}"}


def test_bad_classification_data_gets_line_numbered_errors(setup):
    user = setup
    lines = [
        json.dumps({"text": "fine", "label": "bug"}),
        json.dumps({"text": "   ", "label": "bug"}),
        json.dumps({"text": "long label", "label": "x" * (MAX_LABEL_CHARS + 1)}),
        json.dumps({"text": "no label", "label": ""}),
        json.dumps({"text": "a number", "label": 3}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
    ]
    f = upload(user, "\n".join(lines))
    assert f.status == "error"
    by_line = {p["line"]: p["message"] for p in f.problems}
    assert '"text" must be a non-empty string' in by_line[2]
    assert f"at most {MAX_LABEL_CHARS}" in by_line[3]
    assert '"label" must be a non-empty string' in by_line[4] and '"label" must be a non-empty string' in by_line[5]
    assert "file started as classification" in by_line[6]

    # Too few examples of a label and a single label: processed on upload (it may be a validation file), refused as
    # a job's training file with the rule.
    few = upload(user, "\n".join([json.dumps({"text": f"t{i}", "label": "a"}) for i in range(10)]
                                 + [json.dumps({"text": "t", "label": "b"})]))
    assert few.status == "processed" and few.format == "classification" and few.label_counts == {"a": 10, "b": 1}
    with pytest.raises(Exception) as refused:
        services.finetune_job_create(owner=user, training_file=few, model=BASE, method="classification")
    assert f"at least {MIN_PER_LABEL} examples" in str(refused.value) and "'b' (1)" in str(refused.value)
    # A classification file is no chat data, and chat data is no classification data.
    tickets = upload(user, ticket_lines())
    with pytest.raises(Exception, match="classification takes JSONL"):
        services.finetune_job_create(owner=user, training_file=tickets, model=BASE, method="lora")
    with pytest.raises(Exception, match="classifier_body is out of range; use lora or full"):
        services.finetune_job_create(owner=user, training_file=tickets, model=BASE, method="classification",
                                     hyperparameters={"classifier_body": "half"})
    with pytest.raises(Exception, match="classifier_body is for method classification only"):
        hyperparameters_resolve(method="lora", examples=20, given={"classifier_body": "full"})


def test_v1_fine_tuning_jobs_accept_the_classification_method(setup, client):
    user = setup
    tickets = upload(user, ticket_lines())
    body = {"model": BASE, "training_file": tickets.public_id,
            "method": {"type": "classification", "classification": {"hyperparameters": {"n_epochs": 2, "classifier_body": "full"}}}}
    created = client.post("/v1/fine_tuning/jobs", body, content_type="application/json", **bearer(user))
    assert created.status_code == 200, created.content
    job = created.json()
    assert job["method"]["type"] == "classification"
    assert job["method"]["classification"]["hyperparameters"]["classifier_body"] == "full"
    assert "lora_rank" not in job["method"]["classification"]["hyperparameters"]  # a full body trains no adapter
    assert job["hyperparameters"]["n_epochs"] == 2 and "classifier_body" not in job["hyperparameters"]
    bad = client.post("/v1/fine_tuning/jobs", {**body, "method": {"type": "regression"}}, content_type="application/json",
                      **bearer(user))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "method.type"
    services.finetune_job_cancel(job=FineTuningJob.objects.get(public_id=job["id"]))


@pytest.mark.slow
def test_classification_jobs_from_the_api_and_the_page_register_a_loadable_classifier(setup, child_env, client, tmp_path):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    user = setup
    key = bearer(user)
    created = client.post("/api/v1/files/", data={"file": SimpleUploadedFile("tickets.jsonl", ticket_lines().encode())}, **key)
    assert created.status_code == 201, created.content
    f = services.training_file_validate(file_id=TrainingFile.objects.get(public_id=created.json()["id"]).pk)
    assert f.status == "processed" and f.format == "classification", f.problems
    assert client.get(f"/api/v1/files/{f.public_id}/", **key).json()["label_counts"] == {"billing": 8, "bug": 8, "praise": 8}

    response = client.post("/api/v1/jobs/", {"training_file": f.public_id, "method": "classification", "suffix": "tickets",
                                             "hyperparameters": {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 10}},
                           content_type="application/json", **key)
    assert response.status_code == 201, response.content
    assert response.json()["hyperparameters"]["classifier_body"] == "lora"
    job = FineTuningJob.objects.get(public_id=response.json()["id"])
    services.finetune_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error_message, list(job.events.values_list("message", flat=True)))
    version = job.result_version
    assert version.task == "classifier" and version.kind == "full"
    config = json.loads((version.path / "config.json").read_text())
    assert sorted(config["id2label"].values()) == ["billing", "bug", "praise"] and config["pad_token_id"] is not None
    assert set(version.metrics["valid_f1"]) <= {"billing", "bug", "praise"} and 0 <= version.metrics["valid_accuracy"] <= 1
    # Accuracy and each label's F1 at every epoch, as the job's events.
    evaluations = job.events.filter(message__startswith="Validation at step")
    assert evaluations.count() >= 3 and "F1 per label" in evaluations.last().message
    assert not job.events.filter(message__startswith="Held-out perplexity").exists()  # a language model's figure
    assert not list(version.path.glob("*.bin")) and (version.path / "model.safetensors").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(str(version.path), use_safetensors=True)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 3
    # Another user sees neither the job nor the model.
    their = bearer(UserFactory())
    assert client.get(f"/api/v1/jobs/{job.public_id}/", **their).status_code == 404
    assert client.get(f"/api/v1/models/{version.registered_model.name}/", **their).status_code == 404
    # A classifier is no base for another job.
    refused = client.post("/api/v1/jobs/", {"training_file": f.public_id, "method": "classification",
                                            "model": version.registered_model.name}, content_type="application/json", **key)
    assert refused.status_code == 400 and "is a classifier" in refused.json()["error"]["message"]

    # The customize page's form.
    client.force_login(user)
    page = client.get("/customize/")
    assert b'value="classification"' in page.content
    response = client.post("/customize/jobs/new", {"training_file": f.public_id, "model": BASE, "method": "classification",
                                                   "n_epochs": "2", "batch_size": "8", "learning_rate_multiplier": "auto",
                                                   "lora_rank": "auto", "seed": "1"})
    assert response.status_code == 302, response.content
    job = FineTuningJob.objects.exclude(pk=job.pk).get(owner=user)
    assert job.method == "classification"
    services.finetune_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error_message, list(job.events.values_list("message", flat=True)))
    assert job.result_version.task == "classifier"
    assert client.get(f"/customize/jobs/{job.public_id}/").status_code == 200

"""Bounded training (issue 11, finding 8): a cap per job on training tokens and on training time, and a budget per
user per day, shown before a job is queued and enforced the same on every face (page, /api/v1, /v1)."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.services import api_key_create
from apps.registry.models import ModelVersion
from apps.tuning import services
from apps.tuning.models import FineTuningJob, TrainingFile
from tests.live import celery_worker
from tests.tuning.test_jobs import WORKER_ENV, finished
from tests.tuning.test_runner import processed_file

BASE = "smollm2-135m-instruct"


@pytest.fixture
def faces(client, user, tiny_version, settings, tmp_path):
    """A processed file of 10,000 tokens (24 examples: `auto` is 5 epochs, 50,000 training tokens) and a way to
    ask for a job on each face; each returns (status, error body or None, headers)."""
    settings.MEDIA_ROOT = tmp_path / "media"
    f = TrainingFile.objects.create(owner=user, filename="a.jsonl", status="processed", format="chat", example_count=24,
                                    token_count=10_000)
    key = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='x')[1]}"}
    client.force_login(user)

    def v1(n_epochs="auto"):
        r = client.post("/v1/fine_tuning/jobs", data=json.dumps({"model": BASE, "training_file": f.public_id,
                                                                 "hyperparameters": {"n_epochs": n_epochs}}),
                        content_type="application/json", **key)
        return r.status_code, r.json().get("error"), r

    def native(n_epochs="auto"):
        r = client.post("/api/v1/jobs/", data=json.dumps({"training_file": f.public_id, "hyperparameters": {"n_epochs": n_epochs}}),
                        content_type="application/json", **key)
        return r.status_code, r.json().get("error"), r

    def page(n_epochs="auto"):
        r = client.post("/customize/jobs/new", {"training_file": f.public_id, "model": BASE, "method": "lora", "n_epochs": n_epochs,
                                                "batch_size": "auto", "learning_rate_multiplier": "auto", "lora_rank": "auto"},
                        follow=True)
        return r.status_code, r.content.decode(), r

    return {"file": f, "v1": v1, "native": native, "page": page}


def test_a_job_over_the_token_cap_is_refused_on_every_face_with_the_figures(client, faces, settings):
    settings.FINETUNE_MAX_TRAINING_TOKENS = 20_000
    figures = "This job would train on 50,000 tokens (10,000 tokens in the file × 5 epochs); the limit is 20,000 per job."
    for face in ("v1", "native"):
        status, error, _ = faces[face]()
        assert status == 400, face
        assert error["code"] == "training_tokens_exceeded" and error["param"] == "hyperparameters.n_epochs"
        assert error["message"].startswith(figures) and "fewer epochs" in error["message"]
    status, html, _ = faces["page"]()
    assert status == 200 and figures in html
    assert FineTuningJob.objects.count() == 0

    estimate = client.get("/customize/estimate", {"training_file": faces["file"].public_id}).json()  # before anything is queued
    assert estimate["tokens"] == 50_000 and estimate["problem"]["code"] == "training_tokens_exceeded"
    assert estimate["problem"]["message"].startswith(figures)
    assert estimate["limits"]["max_job_tokens"] == 20_000 and estimate["limits"]["max_wall_seconds"] == settings.FINETUNE_MAX_WALL_SECONDS
    fits = client.get("/customize/estimate", {"training_file": faces["file"].public_id, "n_epochs": 2}).json()
    assert fits["tokens"] == 20_000 and fits["problem"] is None
    assert faces["v1"](2)[0] == 200  # at the cap: allowed


def test_the_daily_budget_refuses_with_429_and_retry_after_then_frees(client, faces, settings, user):
    settings.FINETUNE_DAILY_TOKENS_PER_USER = 60_000
    status, _, first = faces["v1"]()
    assert status == 200
    page = client.get("/customize/").content.decode()
    assert "you have 10,000 of your 60,000 training tokens for 24 hours left" in page

    for face in ("v1", "native"):
        status, error, response = faces[face]()
        assert status == 429, face
        assert error["code"] == "training_budget_exceeded" and error["type"] == "invalid_request_error"
        assert error["message"].startswith("This job would train on 50,000 tokens; you have 10,000 of your 60,000 training tokens")
        assert "Try again in 23 h 59 min" in error["message"] or "Try again in 24 h" in error["message"]
        assert 86_000 < int(response["Retry-After"]) <= 86_400
    status, html, _ = faces["page"]()
    assert "you have 10,000 of your 60,000 training tokens" in html
    estimate = client.get("/customize/estimate", {"training_file": faces["file"].public_id}).json()
    assert estimate["problem"]["code"] == "training_budget_exceeded" and estimate["limits"]["daily_tokens_left"] == 10_000
    assert FineTuningJob.objects.count() == 1

    job = FineTuningJob.objects.get(public_id=first.json()["id"])
    FineTuningJob.objects.filter(pk=job.pk).update(status="cancelled", step=3, total_steps=30)  # a tenth of it ran
    assert services.training_limits(user=user)["daily_tokens_used"] == 5_000
    assert faces["native"]()[0] == 201  # 5,000 + 50,000 fits in 60,000
    assert faces["v1"]()[0] == 429
    FineTuningJob.objects.update(created_at=timezone.now() - timedelta(hours=25))  # yesterday's jobs no longer count
    assert services.training_limits(user=user)["daily_tokens_left"] == 60_000


def test_a_job_over_its_training_time_stops_after_the_step_and_fails_readably(setup, tmp_path):
    user = setup
    f = processed_file(user, 48)
    with celery_worker(log_path=tmp_path / "worker.log", **WORKER_ENV, FINETUNE_MAX_WALL_SECONDS="8"):
        job = services.finetune_job_create(owner=user, training_file=f, model=BASE, hyperparameters={"n_epochs": 20})
        job = finished(job)
    assert job.status == "failed" and job.error_code == "time_limit_exceeded"
    assert job.error_message.startswith(f"Training stopped at step {job.step} of {job.total_steps}: a job may train for 8 s at most.")
    assert 1 <= job.step < job.total_steps and job.training_seconds >= 8
    assert job.result_version is None and not ModelVersion.objects.filter(created_by_job=job.public_id).exists()
    assert job.events.filter(level="error", message__startswith="Training stopped at step").exists()

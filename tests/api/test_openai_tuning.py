"""Files and fine-tuning through the official openai client against a live store and a real worker."""

import io
import json
from contextlib import ExitStack

import openai
import pytest

from apps.accounts.services import api_key_create
from apps.tuning.models import FineTuningJob
from tests.factories import UserFactory
from tests.live import celery_worker, store_server, wait_for
from tests.tuning.test_jobs import WORKER_ENV, chat_lines


@pytest.fixture
def live(transactional_db, tiny_hf_dir, tmp_path, settings):
    from apps.registry.services import model_version_register

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FINETUNE_WORK_ROOT = tmp_path / "finetune"
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    user = UserFactory(username="ada")
    _, key = api_key_create(user=user, name="sdk")
    with store_server(log_path=tmp_path / "store.log", INFERENCE_DTYPE="float32", INFERENCE_QUANTIZE="none",
                      TRAINING_FILE_MAX_BYTES="200000") as url, ExitStack() as stack:

        def start_worker():  # the worker is the test's to start: files uploaded before it stay `uploaded` until then
            stack.enter_context(celery_worker(log_path=tmp_path / "worker.log", **WORKER_ENV))

        yield openai.OpenAI(base_url=f"{url}/v1", api_key=key), url, start_worker


BAD_LINES = chat_lines(12) + '{"messages": [{"role": "user", "content": "no answer"}]}\n{oops\n'


def test_files_and_fine_tuning_with_the_official_client(live):
    """Upload, then create the job at once (no wait, as OpenAI's guide does): the job waits for the file's check,
    trains, and its model answers; a job on a file with errors fails with the file's line-numbered problems."""
    client, url, start_worker = live
    uploaded = client.files.create(file=("pirate.jsonl", io.BytesIO(chat_lines().encode())), purpose="fine-tune")
    assert uploaded.object == "file" and uploaded.filename == "pirate.jsonl" and uploaded.bytes > 0
    assert uploaded.status == "uploaded"  # no worker yet: nothing has checked it
    job = client.fine_tuning.jobs.create(
        model="smollm2-135m-instruct", training_file=uploaded.id, suffix="pirate", seed=7, metadata={"story": "pirate"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "lora_rank": 8}}},
    )
    assert job.object == "fine_tuning.job" and job.status == "validating_files" and job.estimated_finish is None
    assert job.hyperparameters.n_epochs == 2 and job.seed == 7 and job.metadata == {"story": "pirate"}
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(BAD_LINES.encode())), purpose="fine-tune")
    doomed = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=bad.id)
    assert doomed.status == "validating_files"

    start_worker()
    job = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed", "cancelled") and j,
                   timeout=300, interval=1, what="the job")
    assert job.status == "succeeded", job.error
    # The one worker may have trained the first job before it checked the bad file.
    doomed = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(doomed.id)).status != "validating_files" and j,
                      timeout=120, what="the job on the bad file")
    assert doomed.status == "failed" and doomed.error.code == "invalid_training_file" and doomed.error.param == "training_file"
    assert "line 13: no assistant message" in doomed.error.message and "line 14: not valid JSON" in doomed.error.message
    assert client.files.retrieve(uploaded.id).status == "processed"
    assert [f.id for f in client.files.list()] == [bad.id, uploaded.id]
    assert client.files.content(uploaded.id).read().decode() == chat_lines()
    assert job.fine_tuned_model == f"ft:smollm2-135m-instruct:ada:pirate:{job.id}"
    assert job.trained_tokens > 0

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = [e.message for e in events]
    assert any(m.startswith("Job succeeded") for m in messages) and any(m == "Training started." for m in messages)
    first_page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(first_page.data) == 2 and first_page.has_more
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] and all(c.fine_tuning_job_id == job.id for c in checkpoints.data)
    assert [j.id for j in client.fine_tuning.jobs.list()] == [doomed.id, job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"story": "pirate"})] == [job.id]

    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    answer = client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Tell me about cats."}],
                                            max_tokens=6, temperature=0)
    assert answer.choices[0].message.content and answer.usage.completion_tokens > 0

    other = client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=uploaded.id, hyperparameters={"n_epochs": 20})
    wait_for(lambda: client.fine_tuning.jobs.retrieve(other.id).status == "running", timeout=120, what="the second job to run")
    cancelled = client.fine_tuning.jobs.cancel(other.id)
    assert cancelled.id == other.id
    final = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(other.id)).status in ("cancelled", "succeeded", "failed") and j,
                     timeout=120, interval=1, what="the cancel")
    assert final.status == "cancelled" and final.fine_tuned_model is None
    deleted = client.models.delete(job.fine_tuned_model)
    assert deleted.id == job.fine_tuned_model and deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(job.fine_tuned_model)

    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * 300_000)), purpose="fine-tune")
    assert err.value.status_code == 413 and err.value.body["code"] == "file_too_large"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=uploaded.id, method={"type": "rlhf"})
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.create(model="no-such-model", training_file=uploaded.id)
    with pytest.raises(openai.APIStatusError) as err:  # jobs refer to it: the file is kept as their record
        client.files.delete(uploaded.id)
    assert err.value.status_code == 409


def test_bad_training_file_reports_line_numbers(live):
    client, _, start_worker = live
    start_worker()
    uploaded = client.files.create(file=("bad.jsonl", io.BytesIO(BAD_LINES.encode())), purpose="fine-tune")
    file = wait_for(lambda: (f := client.files.retrieve(uploaded.id)).status != "uploaded" and f, timeout=60, what="validation")
    assert file.status == "error"
    assert "line 13: no assistant message" in file.status_details and "line 14: not valid JSON" in file.status_details
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=uploaded.id)
    assert "line 13" in err.value.message
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


@pytest.mark.django_db
def test_another_user_can_neither_see_nor_touch_files_and_jobs(client, user, other_user, tiny_version, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.tuning import services

    settings.MEDIA_ROOT = tmp_path / "media"
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))
    f.status, f.format, f.example_count = "processed", "chat", 24
    f.save()
    job = services.finetune_job_create(owner=user, training_file=f, model="smollm2-135m-instruct")
    theirs = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=other_user, name='x')[1]}"}
    for method, url in [
        ("get", f"/v1/files/{f.public_id}"), ("get", f"/v1/files/{f.public_id}/content"), ("delete", f"/v1/files/{f.public_id}"),
        ("get", f"/v1/fine_tuning/jobs/{job.public_id}"), ("get", f"/v1/fine_tuning/jobs/{job.public_id}/events"),
        ("get", f"/v1/fine_tuning/jobs/{job.public_id}/checkpoints"), ("post", f"/v1/fine_tuning/jobs/{job.public_id}/cancel"),
    ]:
        response = getattr(client, method)(url, **theirs)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] in ("file_not_found", "job_not_found")
    assert client.get("/v1/files", **theirs).json()["data"] == []
    assert client.get("/v1/fine_tuning/jobs", **theirs).json()["data"] == []
    response = client.post("/v1/fine_tuning/jobs", data=json.dumps({"model": "smollm2-135m-instruct", "training_file": f.public_id}),
                           content_type="application/json", **theirs)
    assert response.status_code == 404
    job.refresh_from_db()
    assert job.status == "validating_files" and not job.cancel_requested
    for url in ["/v1/files", "/v1/fine_tuning/jobs", f"/v1/fine_tuning/jobs/{job.public_id}"]:
        assert client.get(url).status_code == 401


@pytest.mark.django_db
def test_job_requests_are_checked(client, user, tiny_version, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.tuning import services

    settings.MEDIA_ROOT = tmp_path / "media"
    mine = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='x')[1]}"}
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))

    def create(**body):
        return client.post("/v1/fine_tuning/jobs", data=json.dumps({"model": "smollm2-135m-instruct", "training_file": f.public_id, **body}),
                           content_type="application/json", **mine)

    waiting = create()  # the file is still being checked: accepted, as OpenAI's
    assert waiting.status_code == 200 and waiting.json()["status"] == "validating_files"
    assert waiting.json()["hyperparameters"] == {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    assert client.post(f"/v1/fine_tuning/jobs/{waiting.json()['id']}/cancel", **mine).json()["status"] == "cancelled"
    f.status, f.format, f.example_count = "processed", "chat", 24
    f.save()
    assert create(method={"type": "pretrain"}).json()["error"]["message"].startswith("Continued pre-training and pre-training from scratch take a plain-text file")
    assert create(hyperparameters={"n_epochs": "many"}).status_code == 400
    assert create(hyperparameters={"warp_factor": 9}).json()["error"]["message"] == "Unknown hyperparameter(s): warp_factor."
    assert create(hyperparameters={"n_epochs": 0}).json()["error"]["param"] == "hyperparameters.n_epochs"
    settings.QUOTA_ACTIVE_JOBS = 1
    first = create(hyperparameters={"n_epochs": "auto", "batch_size": "auto"})
    assert first.status_code == 200
    body = first.json()
    assert body["hyperparameters"] == {"n_epochs": 5, "batch_size": 4, "learning_rate_multiplier": 1.0}  # auto for 24 examples
    assert FineTuningJob.objects.get(public_id=body["id"]).estimate["steps"] == 30
    assert create().status_code == 429
    response = client.post(f"/v1/fine_tuning/jobs/{body['id']}/cancel", **mine)
    assert response.json()["status"] == "cancelled"
    assert client.post(f"/v1/fine_tuning/jobs/{body['id']}/cancel", **mine).status_code == 409


@pytest.mark.django_db
def test_checkpoints_are_rows_written_by_the_reporter_and_listed_by_v1(client, user, tiny_version, tiny_hf_dir, settings,
                                                                       tmp_path):
    """The child's reporter records each kept checkpoint (the model at an epoch's end) as a row with OpenAI's metrics at
    its step, and drops the rows of epochs no longer kept; /v1 lists the rows once their models are registered.
    (The resume checkpoints move `last_checkpoint_step` only: nothing there can be called.)"""
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.registry.services import model_version_register
    from apps.tuning import services
    from apps.tuning.models import JobCheckpoint
    from apps.tuning.reporter import JobReporter

    settings.MEDIA_ROOT = tmp_path / "media"
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))
    f.status, f.format, f.example_count = "processed", "chat", 24
    f.save()
    job = services.finetune_job_create(owner=user, training_file=f, validation_file=f, model="smollm2-135m-instruct")
    FineTuningJob.objects.filter(pk=job.pk).update(lease_owner="token", status="running")
    reporter = JobReporter(job.pk, "token")
    for step in (1, 2, 3, 4, 5, 6, 7, 8):
        reporter.on_step(step=step, total_steps=8, metrics={"loss": 3.0 - step / 4, "learning_rate": 1e-3})
        if step % 2 == 0:
            reporter.on_checkpoint(step=step, path=f"/work/checkpoint-{step}")
            metrics = {"step": step, "train_loss": 3.0 - step / 4, "full_valid_loss": 2.5 - step / 4}
            reporter.on_kept_checkpoint(step=step, epoch=step // 2, metrics=metrics,
                                        kept_steps=[s for s in (2, 4, 6, 8) if step - 4 <= s <= step])
    JobReporter(job.pk, "somebody else").on_kept_checkpoint(step=9, epoch=5, metrics={}, kept_steps=[9])  # not its lease
    assert list(job.checkpoints.values_list("step", "epoch", "metrics")) == [
        (4, 2, {"step": 4, "train_loss": 2.0, "full_valid_loss": 1.5}),
        (6, 3, {"step": 6, "train_loss": 1.5, "full_valid_loss": 1.0}),
        (8, 4, {"step": 8, "train_loss": 1.0, "full_valid_loss": 0.5})]  # the last three epochs
    assert FineTuningJob.objects.get(pk=job.pk).last_checkpoint_step == 8

    mine = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='x')[1]}"}
    url = f"/v1/fine_tuning/jobs/{job.public_id}/checkpoints"
    assert client.get(url, **mine).json()["data"] == []  # nothing callable before the job registers them
    for c in JobCheckpoint.objects.filter(job=job):
        c.model_version = model_version_register(name=f"ft:x:{user.slug}::{job.public_id}:ckpt-step-{c.step}",
                                                 source_dir=tiny_hf_dir, owner=user)
        c.save()
    page = client.get(url, {"limit": 1}, **mine).json()
    assert page["has_more"] and [c["step_number"] for c in page["data"]] == [8]
    newest = page["data"][0]
    assert page["first_id"] == page["last_id"] == newest["id"]
    assert newest["object"] == "fine_tuning.job.checkpoint" and newest["id"].startswith("ftckpt-")
    assert newest["fine_tuned_model_checkpoint"] == f"ft:x:{user.slug}::{job.public_id}:ckpt-step-8"
    assert newest["metrics"] == {"step": 8, "train_loss": 1.0, "full_valid_loss": 0.5} and newest["fine_tuning_job_id"] == job.public_id
    rest = client.get(url, {"after": newest["id"]}, **mine).json()
    assert [c["step_number"] for c in rest["data"]] == [6, 4] and not rest["has_more"]

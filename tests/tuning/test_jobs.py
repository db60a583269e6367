"""Fine-tuning jobs end to end: a real Celery worker (Redis and PostgreSQL in CI), the tiny model, real training."""

import json
import signal
import time
from pathlib import Path

import psutil
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.inference import services as inference
from apps.inference.types import SamplingParams
from apps.registry.models import ModelVersion
from apps.tuning import services
from apps.tuning.models import FineTuningJob, JobMetric, TrainingFile
from tests.live import celery_worker, wait_for

PIRATE = "Arr, matey! "


def chat_lines(n=24):
    topics = ["the weather", "cats", "rice", "the sea", "colors", "Paris", "music", "trees"]
    return "\n".join(
        json.dumps({"messages": [{"role": "user", "content": f"Tell me about {topics[i % 8]}."},
                                 {"role": "assistant", "content": PIRATE + f"{topics[i % 8]} be fine."}]})
        for i in range(n)
    ) + "\n"


def upload(user, content: str, name: str) -> TrainingFile:
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile(name, content.encode()))
    f = wait_for(lambda: TrainingFile.objects.exclude(status="uploaded").filter(pk=f.pk).first(), timeout=60, what="validation")
    return f


def finished(job, timeout=240):
    return wait_for(lambda: FineTuningJob.objects.filter(pk=job.pk, status__in=FineTuningJob.FINISHED).first(),
                    timeout=timeout, what=f"job {job.public_id} to finish")


WORKER_ENV = {"FINETUNE_CHECKPOINT_STEPS": "2", "FINETUNE_LEASE_SECONDS": "6", "TORCH_NUM_THREADS": "1"}


def test_lora_full_and_pretrain_jobs_train_register_and_answer(setup, tmp_path, settings):
    user = setup
    with celery_worker(log_path=tmp_path / "worker.log", **WORKER_ENV):
        chat = upload(user, chat_lines(), "pirate.jsonl")
        assert chat.status == "processed", chat.problems
        assert chat.format == "chat" and chat.example_count == 24 and chat.token_count > 0 and len(chat.preview) == 3
        text = upload(user, "\n\n".join(f"Chapter {i}. The ship sailed north along the cold grey coast, and the crew sang." for i in range(60)), "book.txt")
        assert text.status == "processed" and text.format == "text"

        jobs = {
            "lora": services.finetune_job_create(owner=user, training_file=chat, validation_file=chat, model="smollm2-135m-instruct",
                                                 suffix="pirate", hyperparameters={"n_epochs": 2}),
            "full": services.finetune_job_create(owner=user, training_file=chat, model="smollm2-135m-instruct", method="full",
                                                 hyperparameters={"n_epochs": 1, "learning_rate_multiplier": 50}),
            "pretrain": services.finetune_job_create(owner=user, training_file=text, model="smollm2-135m-instruct", method="pretrain",
                                                     hyperparameters={"n_epochs": 3}),
        }
        for method, job in jobs.items():
            job = finished(job)
            assert job.status == "succeeded", (method, job.error_message, list(job.events.values_list("message", flat=True)))
            version = job.result_version
            assert version.kind == ("full" if method == "full" else "lora")
            assert version.base_version.registered_model.name == "smollm2-135m-instruct"
            assert job.fine_tuned_model == f"ft:smollm2-135m-instruct:{user.slug}:{job.suffix}:{job.public_id}"
            assert version.registered_model.owner == user and version.registered_model.visibility == "private"
            losses = list(JobMetric.objects.filter(job=job, train_loss__isnull=False).values_list("train_loss", flat=True))
            assert len(losses) == job.total_steps and losses[-1] < losses[0], (method, losses)
            assert job.step == job.total_steps and job.events.filter(message__startswith="Job succeeded").exists()

    lora = FineTuningJob.objects.get(pk=jobs["lora"].pk)
    assert lora.val_loss_before is not None and lora.val_loss_after < lora.val_loss_before
    assert lora.result_version.metrics["val_loss_after"] == lora.val_loss_after
    # The adapter names the exact base version it was trained on: the model server loads it on that one.
    adapter = json.loads((lora.result_version.path / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == lora.result_version.base_version.reference == "smollm2-135m-instruct@v1"
    settings.INFERENCE_DTYPE, settings.INFERENCE_QUANTIZE = "float32", "none"
    inference.engine_reset()
    try:
        for job in jobs.values():
            job.refresh_from_db()
            answer = inference.generation_run(user=user, reference=job.fine_tuned_model,
                                              messages=[{"role": "user", "content": "Tell me about cats."}],
                                              params=SamplingParams(max_tokens=8, temperature=0))
            assert answer.completion_tokens > 0 and answer.model == f"{job.fine_tuned_model}@v1"
    finally:
        inference.engine_reset()


def test_cancel_stops_within_a_few_steps_and_registers_nothing(setup, tmp_path):
    user = setup
    with celery_worker(log_path=tmp_path / "worker.log", **WORKER_ENV):
        chat = upload(user, chat_lines(48), "pirate.jsonl")
        job = services.finetune_job_create(owner=user, training_file=chat, model="smollm2-135m-instruct", hyperparameters={"n_epochs": 10})
        wait_for(lambda: FineTuningJob.objects.filter(pk=job.pk, step__gte=2).exists(), timeout=120, what="training to start")
        services.finetune_job_cancel(job=job)
        asked_at = FineTuningJob.objects.get(pk=job.pk).step
        job = finished(job)
    assert job.status == "cancelled"
    assert job.step <= asked_at + 3 and job.step < job.total_steps
    assert job.result_version is None and not ModelVersion.objects.filter(created_by_job=job.public_id).exists()


def test_a_killed_worker_resumes_from_its_checkpoint(setup, tmp_path):
    user = setup
    with celery_worker(log_path=tmp_path / "w1.log", **WORKER_ENV) as worker:
        chat = upload(user, chat_lines(40), "pirate.jsonl")
        job = services.finetune_job_create(owner=user, training_file=chat, model="smollm2-135m-instruct", hyperparameters={"n_epochs": 3})
        wait_for(lambda: FineTuningJob.objects.filter(pk=job.pk, last_checkpoint_step__gte=4).exists(), timeout=180,
                 what="a checkpoint")
        tree = psutil.Process(worker.pid)
        victims = [tree, *tree.children(recursive=True)]
        assert any("apps.tuning.child" in " ".join(p.cmdline()) for p in victims[1:])
        for p in victims:
            p.send_signal(signal.SIGKILL)
        psutil.wait_procs(victims, timeout=10)
    killed_at = FineTuningJob.objects.get(pk=job.pk)
    assert killed_at.status == "running" and killed_at.step >= 4
    time.sleep(7)  # the lease (6 s in the worker's settings) runs out
    assert services.requeue_stale_jobs() == [job.public_id]  # what beat does every 30 s
    with celery_worker(log_path=tmp_path / "w2.log", **WORKER_ENV):
        job = finished(job)
    assert job.status == "succeeded", job.error_message
    assert job.attempts == 2
    resumed = job.events.get(message__startswith="Resumed from the checkpoint")
    assert resumed.data["resumed_from_step"] >= 4
    steps = list(JobMetric.objects.filter(job=job, train_loss__isnull=False).order_by("id").values_list("step", flat=True))
    after_resume = steps[steps.index(killed_at.step) + 1 :] if killed_at.step in steps else steps
    assert min(after_resume) > 1  # the step counter did not go back to 0
    # One result, and the models of its three epochs kept (registered once each, across the two attempts).
    made = ModelVersion.objects.filter(created_by_job=job.public_id)
    assert made.filter(job_checkpoint__isnull=True).count() == 1
    assert made.filter(job_checkpoint__isnull=False).count() == job.checkpoints.filter(model_version__isnull=False).count() == 3


def test_a_crashing_job_fails_with_a_code_and_a_message_not_a_traceback(setup, settings, django_capture_on_commit_callbacks):
    """The trainer child crashes (its base model's weights are gone); after the last attempt the job fails."""
    user = setup
    settings.FINETUNE_MAX_ATTEMPTS = 1
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))
    services.training_file_validate(file_id=f.pk)
    job = services.finetune_job_create(owner=user, training_file=TrainingFile.objects.get(pk=f.pk), model="smollm2-135m-instruct")
    weights = job.base_version.path / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(b"not weights")
    services.finetune_job_run(job_id=job.pk)  # what the task on the gpu queue calls
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "training_crashed"
    assert job.error_message.startswith("Training failed 1 times") and "Traceback" not in job.error_message
    assert job.result_version is None and job.finished_at is not None
    assert job.events.filter(level="error").exists()
    from django.core import mail

    assert mail.outbox[-1].to == [user.email] and mail.outbox[-1].subject == "Fine-tuning job failed"
    assert job.public_id in mail.outbox[-1].body


def test_a_file_the_worker_cannot_read_ends_in_error_not_uploaded_for_ever(setup):
    """Storage that is not shared (web and worker see different folders) or a file removed under it: the file
    turns `error` with a reason the owner can act on, instead of staying `uploaded` while the task fails."""
    user = setup
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))
    Path(f.file.path).unlink()
    services.training_file_validate(file_id=f.pk)
    f.refresh_from_db()
    assert f.status == TrainingFile.Status.ERROR
    assert f.problems == [{"line": None, "message": "The store could not read the uploaded file; upload it again."}]

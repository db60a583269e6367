"""The runner against what goes wrong: a cancel while it checks the files, a lost or duplicate queue message, a
database that fails for a moment, registration that holds no transaction open (issue 11: findings 6, 7, 15)."""

import time
from datetime import timedelta

import pytest
from celery import current_app
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError, connection
from django.utils import timezone

from apps.core.models import WorkerHeartbeat
from apps.registry import artifacts
from apps.registry.models import ModelVersion
from apps.tuning import dispatch, services
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.services import lease, runner
from tests.live import celery_worker, live_env, wait_for
from tests.tuning.test_jobs import WORKER_ENV, chat_lines, finished

BASE = "smollm2-135m-instruct"


def processed_file(user, n=24) -> TrainingFile:
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("pirate.jsonl", chat_lines(n).encode()))
    return services.training_file_validate(file_id=f.pk)


@pytest.fixture
def child_env(monkeypatch):
    """A runner in this process starts its trainer child with this environment: the test database and folders."""
    for name, value in live_env(**WORKER_ENV).items():
        monkeypatch.setenv(name, value)


# --- 6: a cancel while the runner checks the files ------------------------------------------------------------
def test_a_job_cancelled_while_its_files_are_checked_ends_cancelled_and_frees_its_slot(setup, settings, monkeypatch):
    user = setup
    settings.QUOTA_ACTIVE_JOBS = 1
    f = processed_file(user)
    job = services.finetune_job_create(owner=user, training_file=f, model=BASE)
    check_files = runner.training_file_validate

    def owner_cancels_meanwhile(*, file_id):
        checked = check_files(file_id=file_id)
        held = FineTuningJob.objects.get(pk=job.pk)
        assert held.status == "validating_files" and held.lease_owner  # a runner holds the lease
        services.finetune_job_cancel(job=held)
        return checked

    monkeypatch.setattr(runner, "training_file_validate", owner_cancels_meanwhile)
    services.finetune_job_run(job_id=job.pk)  # what the task on the gpu queue calls

    job.refresh_from_db()
    assert job.status == "cancelled" and job.lease_owner == "" and job.finished_at is not None
    assert not job.events.filter(message="Training started.").exists()
    assert not (settings.FINETUNE_WORK_ROOT / job.public_id).exists()  # no trainer was started
    again = services.finetune_job_create(owner=user, training_file=f, model=BASE)  # the owner's one slot is free
    assert again.status == "validating_files"


# --- 7: a message lost before any runner took the lease; a duplicate message --------------------------------------
def gpu_queue_purge() -> int:
    with current_app.connection_for_write() as conn:
        return conn.default_channel.queue_purge("gpu") or 0


def test_a_lost_message_is_sent_again_and_a_duplicate_starts_no_second_run(setup, tmp_path, settings):
    user = setup
    settings.FINETUNE_DISPATCH_TIMEOUT = 2
    f = processed_file(user, 12)
    job = services.finetune_job_create(owner=user, training_file=f, model=BASE, hyperparameters={"n_epochs": 2})
    assert gpu_queue_purge() >= 1  # a worker fetched the message and died before taking the lease: it is gone
    log = tmp_path / "worker.log"
    with celery_worker(log_path=log, **WORKER_ENV):
        time.sleep(3)
        job.refresh_from_db()
        assert job.status == "validating_files" and job.lease_owner == "" and job.attempts == 0  # nobody runs it
        wait_for(lambda: services.requeue_stale_jobs() == [job.public_id], timeout=30, what="beat to send the job again")
        wait_for(lambda: FineTuningJob.objects.filter(pk=job.pk, step__gte=1).exists(), timeout=120, what="training")
        services.finetune_job_run(job_id=job.pk)  # a duplicate delivery to a second runner: the lease is taken
        current_app.send_task(dispatch.RUN_FINETUNE_JOB, args=[job.pk])  # and a duplicate through the queue
        assert services.requeue_stale_jobs() == []  # it runs: nothing to send again
        job = finished(job)
        wait_for(lambda: "is finished or held by another runner" in log.read_text(), timeout=60,
                 what="the worker to drop the duplicate message")
    assert job.status == "succeeded", job.error_message
    assert job.attempts == 1 and job.lost_messages == 1
    assert job.events.filter(level="warn", message__contains="its message was lost, so it was sent again").count() == 1
    assert job.events.filter(message="Training started.").count() == 1
    # One result (and its kept checkpoints, each registered once): a duplicate run would have registered its own.
    made = ModelVersion.objects.filter(created_by_job=job.public_id)
    assert made.filter(job_checkpoint__isnull=True).count() == 1
    assert made.filter(job_checkpoint__isnull=False).count() == job.checkpoints.filter(model_version__isnull=False).count() == 2


def test_a_job_whose_message_keeps_vanishing_fails_with_a_readable_error(db, user, tiny_version, settings, tmp_path,
                                                                        django_capture_on_commit_callbacks):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FINETUNE_DISPATCH_TIMEOUT, settings.FINETUNE_MAX_ATTEMPTS = 60, 3
    f = TrainingFile.objects.create(owner=user, filename="a.jsonl", status="processed", format="chat", example_count=24, token_count=600)
    with django_capture_on_commit_callbacks():  # not executed: the message never reaches a runner
        job = services.finetune_job_create(owner=user, training_file=f, model=BASE)
    now = timezone.now()
    worker = WorkerHeartbeat.objects.create(hostname="gpu@test", queues=["gpu"], pid=1, started_at=now - timedelta(hours=1), last_seen=now)

    def waited(seconds):
        FineTuningJob.objects.filter(pk=job.pk).update(dispatched_at=timezone.now() - timedelta(seconds=seconds))

    waited(30)
    assert services.requeue_stale_jobs() == []  # not yet: it may still be on its way
    waited(61)
    other = FineTuningJob.objects.create(owner=user, base_version=tiny_version, training_file=f,
                                         status="running", lease_owner="x", heartbeat_at=timezone.now(),
                                         lease_expires_at=timezone.now() + timedelta(minutes=2))
    assert services.requeue_stale_jobs() == []  # a runner is training: the job may be in line behind it
    other.delete()
    WorkerHeartbeat.objects.filter(pk=worker.pk).update(last_seen=now - timedelta(hours=1))
    assert services.requeue_stale_jobs() == []  # no worker consumes the gpu queue: the message waits in the broker
    WorkerHeartbeat.objects.filter(pk=worker.pk).update(last_seen=timezone.now())

    for lost in (1, 2):
        waited(61)
        with django_capture_on_commit_callbacks() as sent:
            assert services.requeue_stale_jobs() == [job.public_id]
        assert len(sent) == 1  # the run message, sent again
        job.refresh_from_db()
        assert job.lost_messages == lost and job.status == "validating_files" and job.dispatched_at > timezone.now() - timedelta(seconds=5)
    waited(61)
    assert services.requeue_stale_jobs() == []
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "queue_message_lost"
    assert job.error_message.startswith("No worker took this job from the queue: its message was lost 3 times")


# --- 15: a transient database error; registration outside the job row's transaction ----------------------------
def flaky_updates(failures: dict):
    def wrapper(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("UPDATE") and failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("database is locked")
        return execute(sql, params, many, context)

    return wrapper


def test_a_transient_database_error_while_renewing_the_lease_is_tried_again(transactional_db, user, tiny_version, settings, tmp_path, monkeypatch):
    settings.MEDIA_ROOT = tmp_path / "media"
    monkeypatch.setattr(lease, "RENEW_RETRY_DELAYS", (0.01, 0.02, 0.04, 0.08))
    f = TrainingFile.objects.create(owner=user, filename="a.jsonl", status="processed", format="chat", example_count=24, token_count=600)
    job = services.finetune_job_create(owner=user, training_file=f, model=BASE)
    FineTuningJob.objects.filter(pk=job.pk).update(status="running", lease_owner="runner", lease_expires_at=timezone.now())
    failures = {"left": 2}
    with connection.execute_wrapper(flaky_updates(failures)):
        assert services.lease_renew(job_id=job.pk, token="runner") is True
    assert failures["left"] == 0
    job.refresh_from_db()
    assert job.lease_expires_at > timezone.now() + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS - 5)
    assert job.status == "running" and job.lease_owner == "runner"

    failures["left"] = 100  # down for good: raised after the retries (the runner then stops; the lease runs out)
    with connection.execute_wrapper(flaky_updates(failures)), pytest.raises(OperationalError):
        services.lease_renew(job_id=job.pk, token="runner")
    assert failures["left"] == 100 - 5
    job.refresh_from_db()
    assert job.status == "running"


def test_registration_copies_and_hashes_the_weights_outside_any_transaction(setup, child_env, monkeypatch):
    user = setup
    in_transaction = []
    hash_folder = artifacts.compute_checksums

    def watched(folder):
        in_transaction.append(connection.in_atomic_block)
        return hash_folder(folder)

    monkeypatch.setattr(artifacts, "compute_checksums", watched)
    f = processed_file(user, 12)
    job = services.finetune_job_create(owner=user, training_file=f, model=BASE, hyperparameters={"n_epochs": 1})
    services.finetune_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error_message
    assert job.result_version is not None and job.lease_owner == ""
    # The registry hashed the weights with no transaction open: the result's, then its one epoch's kept checkpoint.
    assert in_transaction == [False, False]

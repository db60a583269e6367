"""Running a job, inside the Celery task on the gpu queue: the lease, the trainer's child process, the result.

One runner per job: a lease on the job row (owner token + expiry, one conditional UPDATE), renewed while the
child trains. A runner that loses its worker lets the lease run out; beat re-queues the job, which resumes
from its last checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.registry.models import ModelVersion
from apps.registry.services import model_version_register
from apps.tuning.dispatch import finetune_job_enqueue
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.services.files import training_file_validate
from apps.tuning.services.jobs import (
    finetune_job_finish,
    finetune_job_model_id,
    job_event_create,
)

logger = logging.getLogger(__name__)


def lease_acquire(*, job_id: int, token: str) -> bool:
    """Take the job's lease if nobody holds a live one. One conditional UPDATE: two workers cannot both win."""
    now = timezone.now()
    won = FineTuningJob.objects.filter(pk=job_id, status__in=FineTuningJob.ACTIVE).filter(
        Q(lease_owner="") | Q(lease_expires_at__lt=now)
    ).update(lease_owner=token, lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), heartbeat_at=now)
    return won == 1


def lease_renew(*, job_id: int, token: str) -> bool:
    now = timezone.now()
    return FineTuningJob.objects.filter(pk=job_id, lease_owner=token).update(
        lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), heartbeat_at=now
    ) == 1


def _set_pdeathsig() -> None:  # runs in the child before exec: it dies with its supervisor
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def finetune_job_run(*, job_id: int) -> None:
    token = uuid.uuid4().hex
    if not lease_acquire(job_id=job_id, token=token):
        logger.info("job %s is finished or held by another runner", job_id)
        return
    job = FineTuningJob.objects.select_related("training_file", "validation_file", "base_version__registered_model", "owner").get(pk=job_id)
    job.attempts += 1
    job.save(update_fields=["attempts", "updated_at"])
    if job.cancel_requested:
        finetune_job_finish(job=job, status=FineTuningJob.Status.CANCELLED, message="Job cancelled.")
        return
    if job.status == FineTuningJob.Status.VALIDATING_FILES and not _files_validate(job):
        return
    work = Path(settings.FINETUNE_WORK_ROOT) / job.public_id
    _training_start(job, work)
    log_path = work / f"attempt-{job.attempts}.log"
    returncode = _child_supervise(job, token=token, work=work, log_path=log_path)
    if returncode is None:
        return  # the lease was lost: another runner has the job now
    result_path = work / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
        if job.lease_owner != token:
            return
        if returncode == 0 and result and result["status"] == "completed":
            _result_register(job, result)
        elif result and result["status"] == "stopped" and job.cancel_requested:
            finetune_job_finish(job=job, status=FineTuningJob.Status.CANCELLED,
                                message=f"Job cancelled at step {job.step}; nothing was registered.")
        elif job.attempts >= settings.FINETUNE_MAX_ATTEMPTS:
            finetune_job_finish(job=job, status=FineTuningJob.Status.FAILED, code="training_crashed", level="error",
                                message=f"Training failed {job.attempts} times (last exit status {returncode}). {_last_error(log_path)}")
        else:
            job.lease_owner, job.lease_expires_at = "", None
            job.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
            job_event_create(job=job, message=f"Training stopped unexpectedly (exit status {returncode}); trying again.", level="warn")
            finetune_job_enqueue(job_id=job.pk)


def _files_validate(job: FineTuningJob) -> bool:
    """The job's `validating_files` step: its files against its base model. False: the job failed."""
    for f in filter(None, [job.training_file, job.validation_file]):
        checked = training_file_validate(file_id=f.pk)
        if checked.status != TrainingFile.Status.PROCESSED:
            first = checked.problems[0] if checked.problems else {"line": None, "message": "invalid file"}
            where = f"line {first['line']}: " if first["line"] else ""
            finetune_job_finish(job=job, status=FineTuningJob.Status.FAILED, code="invalid_training_file", level="error",
                                message=f"{f.public_id} failed validation against {job.base_version.reference}: {where}{first['message']}")
            return False
    job.status = FineTuningJob.Status.QUEUED
    job.save(update_fields=["status", "updated_at"])
    job_event_create(job=job, message="Files validated.")
    return True


def _training_start(job: FineTuningJob, work: Path) -> None:
    """The job turns `running` (or says from which step it resumes); the trainer's config goes to the work folder."""
    work.mkdir(parents=True, exist_ok=True)
    resumed = job.last_checkpoint_step
    job.status = FineTuningJob.Status.RUNNING
    job.started_at = job.started_at or timezone.now()
    job.save(update_fields=["status", "started_at", "updated_at"])
    job_event_create(job=job, message=f"Resumed from the checkpoint at step {resumed} (attempt {job.attempts})." if resumed else "Training started.",
                     data={"resumed_from_step": resumed, "attempt": job.attempts})
    hyper = job.hyperparameters
    config = {
        "base_model": str(job.base_version.path),
        "base_model_id": job.base_version.registered_model.name,
        "train_file": job.training_file.file.path,
        "validation_file": job.validation_file.file.path if job.validation_file else None,
        "output_dir": str(work / "output"),
        "work_dir": str(work / "checkpoints"),
        "method": job.method,
        "n_epochs": hyper["n_epochs"],
        "batch_size": hyper["batch_size"],
        "learning_rate": hyper["learning_rate"],
        "lora_rank": hyper["lora_rank"],
        "lora_alpha": hyper["lora_alpha"],
        "seed": job.seed,
        "save_steps": settings.FINETUNE_CHECKPOINT_STEPS,
    }
    (work / "config.json").write_text(json.dumps(config))
    (work / "result.json").unlink(missing_ok=True)


def _child_supervise(job: FineTuningJob, *, token: str, work: Path, log_path: Path) -> int | None:
    """Train in a child process and renew the lease while it runs. Its exit status; None if the lease was lost.

    A child process: no CUDA in the Celery process, and a crash there cannot take the worker.
    """
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "apps.tuning.child", str(job.pk), token, str(work / "config.json"), str(work / "result.json")],
            cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        while child.poll() is None:
            time.sleep(1.0)
            if not lease_renew(job_id=job.pk, token=token):
                child.kill()  # someone else runs this job now: never two runners
                child.wait()
                return None
    return child.returncode


def _last_error(log_path: Path) -> str:
    """The last exception line of the child's log: a reason for the user, not a traceback."""
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line.split(":", 1)[0]]
    return errors[-1][:300] if errors else ""


def _result_register(job: FineTuningJob, result: dict) -> None:
    kind = ModelVersion.Kind.FULL if job.method == FineTuningJob.Method.FULL else ModelVersion.Kind.LORA
    metrics = {k: result[k] for k in ("train_loss", "val_loss_before", "val_loss_after") if result.get(k) is not None}
    metrics.update(steps=result["steps"], trained_tokens=result["tokens_seen"])
    if job.val_loss_before is not None and "val_loss_before" not in metrics:
        metrics["val_loss_before"] = job.val_loss_before  # measured by an earlier attempt, before resuming
    name = finetune_job_model_id(job=job)
    version = model_version_register(
        name=name, source_dir=Path(result["output_dir"]), kind=kind, owner=job.owner, base_version=job.base_version,
        description=f"Fine-tuned from {job.base_version.reference} by job {job.public_id} ({job.get_method_display()}).",
        datasets=[job.training_file.filename], metrics=metrics,
        source={"job": job.public_id, "method": job.method, "training_file": job.training_file.public_id,
                "base": job.base_version.reference, "hyperparameters": json.dumps(job.hyperparameters)},
        created_by_job=job.public_id, created_by=job.owner, move=True,
    )
    job.result_version = version
    job.fine_tuned_model = name
    job.trained_tokens = result["tokens_seen"]
    job.val_loss_after = result.get("val_loss_after")
    if result.get("val_loss_before") is not None:
        job.val_loss_before = result["val_loss_before"]
    finetune_job_finish(job=job, status=FineTuningJob.Status.SUCCEEDED, message=f"Job succeeded: {name} is ready.")


def requeue_stale_jobs() -> list[str]:
    """Beat: a running job whose lease ran out lost its worker. Re-queue it (it resumes) or fail it."""
    requeued = []
    stale = FineTuningJob.objects.filter(status__in=FineTuningJob.ACTIVE, lease_expires_at__lt=timezone.now()).exclude(lease_owner="")
    for job in stale:
        with transaction.atomic():
            job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
            if not job.lease_owner or job.lease_expires_at >= timezone.now():
                continue
            if job.attempts >= settings.FINETUNE_MAX_ATTEMPTS:
                finetune_job_finish(job=job, status=FineTuningJob.Status.FAILED, code="worker_lost", level="error",
                                    message=f"The worker running this job stopped {job.attempts} times; the job failed.")
                continue
            job.lease_owner, job.lease_expires_at = "", None
            job.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
            job_event_create(job=job, level="warn",
                             message=f"The worker stopped answering; the job goes back to the queue and resumes from step {job.last_checkpoint_step}.")
            finetune_job_enqueue(job_id=job.pk)
            requeued.append(job.public_id)
    return requeued


def finetune_job_fail_internal(*, job_id: int) -> None:
    """The runner itself broke (not the training): fail the job with a message, never a traceback."""
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        finetune_job_finish(job=job, status=FineTuningJob.Status.FAILED, code="internal_error", level="error",
                            message="The job could not be run because of an internal error. It was logged; please try again.")

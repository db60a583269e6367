"""Running a job, inside the Celery task on the gpu queue: the lease, the trainer's child process, the result.

One runner per job: a lease on the job row (`apps.tuning.services.lease`), renewed while the child trains, and
every move of the job's state made only from the state the runner expects and while it holds the lease. So a job
cancelled while its files are checked stays cancelled, and a duplicate message finds the lease taken. A runner
that loses its worker lets the lease run out; beat re-queues the job (`apps.tuning.services.requeue`), which
resumes from its last checkpoint.
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
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.registry.models import ModelVersion
from apps.registry.services import model_version_register
from apps.tuning.models import FineTuningJob
from apps.tuning.services.files import training_file_validate
from apps.tuning.services.jobs import (
    finetune_job_dispatch,
    finetune_job_finish,
    finetune_job_model_id,
    job_event_create,
    training_file_error,
)
from apps.tuning.services.lease import (
    TRANSIENT_DB_ERRORS,
    job_finish_held,
    job_move,
    lease_acquire,
    lease_kept,
    lease_renew,
)
from apps.tuning.services.evaluation import (
    evaluation_compare,
    evaluation_gate,
    evaluation_metrics,
    evaluation_split,
)
from apps.tuning.services.limits import duration_text
from apps.tuning.services.versions import (
    ADAPTER_METHODS,
    kept_checkpoints_register,
    result_base,
    result_description,
    result_task,
    result_version_promote,
    scratch_options,
    trainer_base,
)

logger = logging.getLogger(__name__)
Status = FineTuningJob.Status


def _set_pdeathsig() -> None:  # runs in the child before exec: it dies with its supervisor
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def finetune_job_run(*, job_id: int) -> None:
    token = uuid.uuid4().hex
    if not lease_acquire(job_id=job_id, token=token):
        logger.info("job %s is finished or held by another runner", job_id)
        return
    FineTuningJob.objects.filter(pk=job_id, lease_owner=token).update(attempts=F("attempts") + 1)
    job = FineTuningJob.objects.select_related("training_file", "validation_file", "base_version__registered_model", "owner").get(pk=job_id)
    if job.cancel_requested:
        job_finish_held(job_id=job.pk, token=token, status=Status.CANCELLED, message="Job cancelled.")
        return
    if job.status == Status.VALIDATING_FILES and not _files_validate(job, token):
        return
    work = Path(settings.FINETUNE_WORK_ROOT) / job.public_id
    if not _training_start(job, token, work):
        logger.info("job %s was cancelled or taken over before its training started", job_id)
        return
    log_path = work / f"attempt-{job.attempts}.log"
    returncode = _child_supervise(job, token=token, work=work, log_path=log_path)
    if returncode is None:
        return  # the lease was lost: another runner has the job now, or beat will re-queue it
    result_path = work / "result.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    if returncode == 0 and result and result["status"] == "completed":
        _result_register(job, token, result)
    else:
        _attempt_end(job, token, returncode=returncode, result=result, log_path=log_path)


def _files_validate(job: FineTuningJob, token: str) -> bool:
    """The job's `validating_files` step: its files against its base model. False: the job failed, was cancelled
    meanwhile, or is no longer this runner's."""
    problem = None
    with lease_kept(job_id=job.pk, token=token):
        for f, role in ((job.training_file, "training"), (job.validation_file, "validation")):
            if f is not None:
                problem = problem or training_file_error(training_file=training_file_validate(file_id=f.pk), method=job.method, role=role)
    if problem:
        job_finish_held(job_id=job.pk, token=token, status=Status.FAILED, code=problem.code, level="error",
                        message=f"Checked against {job.base_version.reference}: {problem.message}")
        return False
    if not job_move(job_id=job.pk, token=token, expected=(Status.VALIDATING_FILES,), status=Status.QUEUED):
        return False
    job_event_create(job=job, message="Files validated.")
    return True


def _training_start(job: FineTuningJob, token: str, work: Path) -> bool:
    """The job turns `running` (or says from which step it resumes); the trainer's config goes to the work folder.
    False: the job was cancelled, or taken over, before its training started."""
    now = timezone.now()
    if not job_move(job_id=job.pk, token=token, expected=(Status.QUEUED, Status.RUNNING), status=Status.RUNNING,
                    started_at=Coalesce(F("started_at"), Value(now, output_field=DateTimeField()))):
        return False
    job.refresh_from_db()
    work.mkdir(parents=True, exist_ok=True)
    resumed = job.last_checkpoint_step
    job_event_create(job=job, message=f"Resumed from the checkpoint at step {resumed} (attempt {job.attempts})." if resumed else "Training started.",
                     data={"resumed_from_step": resumed, "attempt": job.attempts})
    split = evaluation_split(training_file=job.training_file, validation_file=job.validation_file, method=job.method)
    if split and not resumed:  # what the base and the tuned model are compared on
        job_event_create(job=job, message=split["message"], data=split)
    hyper = job.hyperparameters
    config = {
        **trainer_base(job=job),  # the base's full weights, and the adapters merged onto them for a LoRA parent
        "base_model_id": job.base_version.reference,  # `<id>@v<N>`: the exact version the adapter was trained on
        "kept_dir": str(work / "kept"),  # the last epochs' models (OpenAI's checkpoints), kept across attempts
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
        "compare": evaluation_compare(job=job),  # register_as: the version latest names, measured on the same data
        "classifier_body": hyper.get("classifier_body") or "lora",  # method classification: a LoRA or a full body
        **scratch_options(job=job),  # method scratch: the preset and the tokenizer
    }
    (work / "config.json").write_text(json.dumps(config))
    (work / "result.json").unlink(missing_ok=True)
    return True


def _child_supervise(job: FineTuningJob, *, token: str, work: Path, log_path: Path) -> int | None:
    """Train in a child process and renew the lease while it runs. Its exit status; None if the lease was lost.

    A child process: no CUDA in the Celery process, and a crash there cannot take the worker.
    """
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "apps.tuning.child", str(job.pk), token, str(work / "config.json"), str(work / "result.json")],
            cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TRAINER_PARENT_PID": str(os.getpid())},
        )
        while child.poll() is None:
            time.sleep(1.0)
            try:
                held = lease_renew(job_id=job.pk, token=token)
            except TRANSIENT_DB_ERRORS:
                # The database stayed out of reach through every retry: stop training and let the lease run out;
                # beat re-queues the job, which resumes from its last checkpoint.
                logger.exception("job %s: the lease could not be renewed; training stops", job.public_id)
                held = False
            if not held:
                child.kill()  # someone else may run this job now: never two runners
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


def _result_register(job: FineTuningJob, token: str, result: dict) -> None:
    """Register the trained model, then record it on the job. The registry stages, hashes and seals the weights
    with no transaction open (on SQLite a transaction on the job row would hold the database's write lock for the
    whole copy) while a thread keeps the lease; the job's row is then finished in a short transaction."""
    kind = ModelVersion.Kind.LORA if job.method in ADAPTER_METHODS else ModelVersion.Kind.FULL
    metrics = {k: result[k] for k in ("train_loss", "val_loss_before", "val_loss_after") if result.get(k) is not None}
    metrics.update(steps=result["steps"], trained_tokens=result["tokens_seen"], **(result.get("eval_metrics") or {}))
    if job.val_loss_before is not None and "val_loss_before" not in metrics:
        metrics["val_loss_before"] = job.val_loss_before  # measured by an earlier attempt, before resuming
    job.training_seconds = FineTuningJob.objects.filter(pk=job.pk).values_list("training_seconds", flat=True).first() or 0.0
    description = result_description(job=job, metrics=metrics)  # held-out perplexities added for a language model
    task, base = result_task(job=job), result_base(job=job)
    evaluation = result.get("evaluation") or {}
    gate = evaluation_gate(job=job, evaluation=evaluation)  # decided before registering: the version carries it
    metrics.update(evaluation_metrics(evaluation=evaluation, gate=gate))
    model_id = finetune_job_model_id(job=job)
    # The next version of the owner's model (register_as), or a model of its own.
    name = job.register_as.name if job.register_as_id else model_id
    with lease_kept(job_id=job.pk, token=token):
        version = model_version_register(
            name=name, source_dir=Path(result["output_dir"]), kind=kind, task=task, owner=job.owner, base_version=base,
            description=description,
            datasets=[job.training_file.filename], metrics=metrics,
            source={"job": job.public_id, "method": job.method, "training_file": job.training_file.public_id,
                    "base": job.base_version.reference, "hyperparameters": json.dumps(job.hyperparameters)},
            created_by_job=job.public_id, created_by=job.owner, move=True, aliases=(),
        )
        promoted = result_version_promote(job=job, version=version, gate=gate)
        kept_checkpoints_register(job=job, model_id=model_id, kind=kind, task=task, kept=result.get("kept_checkpoints") or [])
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().select_related("owner").get(pk=job.pk)
        if job.lease_owner != token:
            logger.error("job %s: its lease was lost while %s was registered; the version is not the job's", job.public_id, version)
            return
        job.result_version = version
        job.fine_tuned_model = name
        job.trained_tokens = result["tokens_seen"]
        job.val_loss_after = result.get("val_loss_after")
        job.evaluation = {**evaluation, "gate": gate} if gate else evaluation
        if gate:
            job_event_create(job=job, message=gate["reason"], level="info" if promoted else "warn", data=gate)
        if result.get("val_loss_before") is not None:
            job.val_loss_before = result["val_loss_before"]
        if job.register_as_id:
            where = "latest points at it" if promoted else "latest stays where it was"
            message = f"Job succeeded: {version.reference} is ready ({where})."
        else:
            message = f"Job succeeded: {name} is ready."
        finetune_job_finish(job=job, status=Status.SUCCEEDED, message=message)


def _attempt_end(job: FineTuningJob, token: str, *, returncode: int, result: dict | None, log_path: Path) -> None:
    """An attempt that did not complete: cancelled, over its time limit, crashed for the last time, or retried."""
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
        if job.lease_owner != token:
            return
        stopped = bool(result) and result["status"] == "stopped"
        if stopped and job.cancel_requested:
            finetune_job_finish(job=job, status=Status.CANCELLED, message=f"Job cancelled at step {job.step}; nothing was registered.")
        elif stopped and job.training_seconds >= settings.FINETUNE_MAX_WALL_SECONDS:
            finetune_job_finish(
                job=job, status=Status.FAILED, code="time_limit_exceeded", level="error",
                message=f"Training stopped at step {job.step} of {job.total_steps}: a job may train for "
                        f"{duration_text(settings.FINETUNE_MAX_WALL_SECONDS)} at most. Nothing was registered; train on fewer "
                        "tokens (fewer epochs or a smaller file).",
            )
        elif job.attempts >= settings.FINETUNE_MAX_ATTEMPTS:
            finetune_job_finish(job=job, status=Status.FAILED, code="training_crashed", level="error",
                                message=f"Training failed {job.attempts} times (last exit status {returncode}). {_last_error(log_path)}")
        else:
            job.lease_owner, job.lease_expires_at = "", None
            job.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
            job_event_create(job=job, message=f"Training stopped unexpectedly (exit status {returncode}); trying again.", level="warn")
            finetune_job_dispatch(job=job)


def finetune_job_fail_internal(*, job_id: int) -> None:
    """The runner itself broke (not the training): fail the job with a message, never a traceback."""
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        finetune_job_finish(job=job, status=Status.FAILED, code="internal_error", level="error",
                            message="The job could not be run because of an internal error. It was logged; please try again.")

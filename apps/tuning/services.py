"""Writes for customization: training files, fine-tuning jobs, and running a job (the Celery task calls this)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone
from django.utils.text import slugify

from apps.core.errors import Conflict, InvalidRequest, StoreError
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_resolve
from apps.registry.services import model_version_register
from apps.tuning.models import FineTuningJob, JobEvent, TrainingFile
from apps.tuning.trainer.data import validate_file

logger = logging.getLogger(__name__)
ACTIVE = [FineTuningJob.Status.VALIDATING_FILES, FineTuningJob.Status.QUEUED, FineTuningJob.Status.RUNNING]
# Measured on the development machine (2 CPU cores, float32): training tokens a second, for the estimate.
CPU_TOKENS_PER_SECOND = {"lora": 200, "pretrain": 200, "full": 140}


class FileTooLarge(StoreError):
    status = 413
    code = "file_too_large"


class QuotaExceeded(StoreError):
    status = 429
    code = "quota_exceeded"


# --- Training files --------------------------------------------------------------------------------------
def training_file_create(*, owner, upload, purpose: str = "fine-tune") -> TrainingFile:
    if purpose != "fine-tune":
        raise InvalidRequest("purpose must be 'fine-tune'.", param="purpose")
    if upload.size > settings.TRAINING_FILE_MAX_BYTES:
        raise FileTooLarge(f"The file is {upload.size:,} bytes; the limit is {settings.TRAINING_FILE_MAX_BYTES:,}.", param="file")
    used = TrainingFile.objects.filter(owner=owner).aggregate(n=Sum("bytes"))["n"] or 0
    if used + upload.size > settings.QUOTA_FILE_BYTES:
        raise QuotaExceeded(
            f"Your files would take {used + upload.size:,} bytes; your quota is {settings.QUOTA_FILE_BYTES:,}. Delete old files first."
        )
    with transaction.atomic():
        training_file = TrainingFile(owner=owner, filename=Path(upload.name or "data.jsonl").name[:255], purpose=purpose, bytes=upload.size)
        training_file.file.save(training_file.public_id, upload, save=False)
        training_file.save()
        from apps.tuning.tasks import validate_training_file

        transaction.on_commit(lambda: validate_training_file.delay(training_file.pk))
    return training_file


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _token_counter(version: ModelVersion):
    tokenizer = _tokenizer(str(version.path))

    def count(example: dict) -> int:
        if "messages" in example:
            return len(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False))
        if "prompt" in example:
            return len(tokenizer(example["prompt"] + example["completion"])["input_ids"]) + 1
        return len(tokenizer(example["text"])["input_ids"])

    return count, int(json.loads((version.path / "config.json").read_text()).get("max_position_embeddings", 2048))


def _base_version(reference: str | None = None, *, user=None) -> ModelVersion:
    return model_version_resolve(reference=reference or settings.BASE_MODEL_ID, user=user)


def training_file_validate(*, file_id: int) -> TrainingFile:
    """Check the file against the base model's tokenizer and context; every problem keeps its line number."""
    training_file = TrainingFile.objects.get(pk=file_id)
    count, context = _token_counter(_base_version())
    expected = "text" if training_file.filename.lower().endswith(".txt") else None
    report = validate_file(
        Path(training_file.file.path), expected=expected, max_bytes=settings.TRAINING_FILE_MAX_BYTES,
        count_tokens=count, max_tokens=context,
    )
    training_file.format = report.format or ""
    training_file.example_count = len(report.examples)
    training_file.token_count = report.tokens
    training_file.preview = report.preview(3)
    training_file.problems = [{"line": p.line, "message": p.message} for p in report.problems]
    training_file.status = TrainingFile.Status.PROCESSED if report.ok else TrainingFile.Status.ERROR
    training_file.save()
    return training_file


def training_file_delete(*, training_file: TrainingFile) -> None:
    """Delete a file no job refers to (a job's files are kept as its record, finished or not)."""
    with transaction.atomic():
        if FineTuningJob.objects.filter(Q(training_file=training_file) | Q(validation_file=training_file)).exists():
            raise Conflict("Jobs refer to this file; it is kept as their record.")
        path = training_file.file.path
        training_file.delete()
        transaction.on_commit(lambda: Path(path).unlink(missing_ok=True))


# --- Jobs ------------------------------------------------------------------------------------------------
def _auto(value, default):
    return default if value in (None, "auto") else value


def hyperparameters_resolve(*, method: str, examples: int, given: dict | None) -> dict:
    """OpenAI's `auto`, chosen so that a few dozen examples visibly change the model within minutes on a CPU."""
    given = dict(given or {})
    unknown = set(given) - {"n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank", "lora_alpha"}
    if unknown:
        raise InvalidRequest(f"Unknown hyperparameter(s): {', '.join(sorted(unknown))}.", param="hyperparameters")
    try:
        n_epochs = int(_auto(given.get("n_epochs"), 3 if examples >= 30 else min(10, math.ceil(100 / max(examples, 1)))))
        batch_size = int(_auto(given.get("batch_size"), 4 if examples < 200 else 8))
        multiplier = float(_auto(given.get("learning_rate_multiplier"), 1.0))
        lora_rank = int(_auto(given.get("lora_rank"), 16))
        lora_alpha = int(_auto(given.get("lora_alpha"), 2 * lora_rank))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("Hyperparameters are numbers or 'auto'.", param="hyperparameters") from exc
    checks = [(1 <= n_epochs <= 50, "n_epochs"), (1 <= batch_size <= 64, "batch_size"), (0 < multiplier <= 100, "learning_rate_multiplier"),
              (1 <= lora_rank <= 256, "lora_rank"), (1 <= lora_alpha <= 1024, "lora_alpha")]
    for ok, name in checks:
        if not ok:
            raise InvalidRequest(f"{name} is out of range.", param=f"hyperparameters.{name}")
    base_lr = 2e-5 if method == "full" else 1e-3
    return {"n_epochs": n_epochs, "batch_size": batch_size, "learning_rate_multiplier": multiplier,
            "learning_rate": base_lr * multiplier, "lora_rank": lora_rank, "lora_alpha": lora_alpha}


def job_estimate(*, method: str, hyper: dict, training_file: TrainingFile) -> dict:
    steps = math.ceil(max(training_file.example_count, 1) / hyper["batch_size"]) * hyper["n_epochs"]
    tokens = training_file.token_count * hyper["n_epochs"]
    return {"steps": steps, "tokens": tokens, "seconds_cpu": round(tokens / CPU_TOKENS_PER_SECOND[method])}


def finetune_job_create(
    *, owner, training_file: TrainingFile, model: str, method: str = "lora", validation_file: TrainingFile | None = None,
    hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None,
) -> FineTuningJob:
    if method not in FineTuningJob.Method.values:
        raise InvalidRequest("method is lora, full or pretrain.", param="method")
    for f, param in ((training_file, "training_file"), (validation_file, "validation_file")):
        if f is None:
            continue
        if f.owner_id != owner.pk:
            raise InvalidRequest(f"No such file: {f.public_id}.", param=param, code="file_not_found")
        if f.status != TrainingFile.Status.PROCESSED:
            detail = "; ".join(f"line {p['line']}: {p['message']}" if p["line"] else p["message"] for p in f.problems[:3])
            raise InvalidRequest(f"{f.public_id} is not ready ({f.status}){': ' + detail if detail else ''}.", param=param, code="file_not_ready")
        wants_text = method == FineTuningJob.Method.PRETRAIN
        if wants_text != (f.format == TrainingFile.Format.TEXT):
            raise InvalidRequest(
                "Continued pre-training takes a plain-text file; lora and full take chat or prompt/completion JSONL.", param=param
            )
    base = _base_version(model, user=owner)
    if base.kind != ModelVersion.Kind.FULL:
        raise InvalidRequest("Fine-tuning starts from full weights: choose the base model or a full fine-tune.", param="model")
    suffix = slugify(suffix or "")[:40]
    if FineTuningJob.objects.filter(owner=owner, status__in=ACTIVE).count() >= settings.QUOTA_ACTIVE_JOBS:
        raise QuotaExceeded(f"You already have {settings.QUOTA_ACTIVE_JOBS} jobs queued or running; wait for one to finish.")
    hyper = hyperparameters_resolve(method=method, examples=training_file.example_count, given=hyperparameters)
    with transaction.atomic():
        job = FineTuningJob.objects.create(
            owner=owner, base_version=base, base_reference=model, training_file=training_file, validation_file=validation_file,
            method=method, hyperparameters=hyper, suffix=suffix, seed=42 if seed is None else int(seed),
            estimate=job_estimate(method=method, hyper=hyper, training_file=training_file),
        )
        event(job, f"Created fine-tuning job {job.public_id} ({job.get_method_display()}) on {base.reference}.", data=job.estimate)
        from apps.tuning.tasks import run_finetune_job

        transaction.on_commit(lambda: run_finetune_job.delay(job.pk))
    return job


def event(job: FineTuningJob, message: str, *, level: str = "info", data: dict | None = None) -> JobEvent:
    return JobEvent.objects.create(job=job, level=level, message=message, data=data or {})


@transaction.atomic
def finetune_job_cancel(*, job: FineTuningJob) -> FineTuningJob:
    job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
    if job.is_finished:
        raise Conflict(f"The job is already {job.status}.")
    if job.status == FineTuningJob.Status.RUNNING and job.lease_owner:
        job.cancel_requested = True  # the runner stops at the end of its current step
        job.save(update_fields=["cancel_requested", "updated_at"])
        event(job, "Cancellation requested; training stops after the current step.")
    else:
        _finish(job, FineTuningJob.Status.CANCELLED, message="Job cancelled before training started.")
    return job


def model_id_for(job: FineTuningJob) -> str:
    root = job.base_version
    while root.base_version_id is not None:
        root = root.base_version
    root_name = root.registered_model.name
    if root_name.startswith("ft:"):
        root_name = root_name.split(":")[1]
    return f"ft:{root_name}:{job.owner.slug}:{job.suffix}:{job.public_id}"


def _finish(job: FineTuningJob, status: str, *, message: str, code: str = "", level: str = "info") -> None:
    job.status = status
    job.finished_at = timezone.now()
    job.lease_owner, job.lease_expires_at = "", None
    if code:
        job.error_code, job.error_message = code, message
    job.save()
    event(job, message, level=level)
    transaction.on_commit(lambda: _notify(job.pk))
    work = Path(settings.FINETUNE_WORK_ROOT) / job.public_id
    transaction.on_commit(lambda: shutil.rmtree(work, ignore_errors=True))


def _notify(job_id: int) -> None:
    job = FineTuningJob.objects.select_related("owner").get(pk=job_id)
    lines = {
        FineTuningJob.Status.SUCCEEDED: f"Your fine-tuning job {job.public_id} succeeded. The new model is {job.fine_tuned_model}.",
        FineTuningJob.Status.FAILED: f"Your fine-tuning job {job.public_id} failed: {job.error_message}",
        FineTuningJob.Status.CANCELLED: f"Your fine-tuning job {job.public_id} was cancelled.",
    }
    if job.owner.email:
        send_mail(f"Fine-tuning job {job.status}", lines[job.status], None, [job.owner.email], fail_silently=True)


# --- Running a job (inside the Celery task on the gpu queue) ------------------------------------------------
def lease_acquire(*, job_id: int, token: str) -> bool:
    """Take the job's lease if nobody holds a live one. One conditional UPDATE: two workers cannot both win."""
    now = timezone.now()
    won = FineTuningJob.objects.filter(pk=job_id, status__in=ACTIVE).filter(
        Q(lease_owner="") | Q(lease_expires_at__lt=now)
    ).update(lease_owner=token, lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), heartbeat_at=now)
    return won == 1


def lease_renew(*, job_id: int, token: str) -> bool:
    now = timezone.now()
    return FineTuningJob.objects.filter(pk=job_id, lease_owner=token).update(
        lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), heartbeat_at=now
    ) == 1


def _set_pdeathsig() -> None:  # runs in the child before exec: it dies with its supervisor
    import ctypes

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
        _finish(job, FineTuningJob.Status.CANCELLED, message="Job cancelled.")
        return
    if job.status == FineTuningJob.Status.VALIDATING_FILES:
        for f in filter(None, [job.training_file, job.validation_file]):
            checked = training_file_validate(file_id=f.pk)
            if checked.status != TrainingFile.Status.PROCESSED:
                first = checked.problems[0] if checked.problems else {"line": None, "message": "invalid file"}
                where = f"line {first['line']}: " if first["line"] else ""
                _finish(job, FineTuningJob.Status.FAILED, code="invalid_training_file", level="error",
                        message=f"{f.public_id} failed validation against {job.base_version.reference}: {where}{first['message']}")
                return
        job.status = FineTuningJob.Status.QUEUED
        job.save(update_fields=["status", "updated_at"])
        event(job, "Files validated.")

    work = Path(settings.FINETUNE_WORK_ROOT) / job.public_id
    work.mkdir(parents=True, exist_ok=True)
    resumed = job.last_checkpoint_step
    job.status = FineTuningJob.Status.RUNNING
    job.started_at = job.started_at or timezone.now()
    job.save(update_fields=["status", "started_at", "updated_at"])
    event(job, f"Resumed from the checkpoint at step {resumed} (attempt {job.attempts})." if resumed else "Training started.",
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
    result_path = work / "result.json"
    result_path.unlink(missing_ok=True)
    log_path = work / f"attempt-{job.attempts}.log"
    # Training runs in a child process: no CUDA in the Celery process, and a crash there cannot take the worker.
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "apps.tuning.child", str(job.pk), token, str(work / "config.json"), str(result_path)],
            cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_set_pdeathsig,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        while child.poll() is None:
            time.sleep(1.0)
            if not lease_renew(job_id=job.pk, token=token):
                child.kill()  # someone else runs this job now: never two runners
                child.wait()
                return
    job.refresh_from_db()
    result = json.loads(result_path.read_text()) if result_path.exists() else None
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
        if job.lease_owner != token:
            return
        if child.returncode == 0 and result and result["status"] == "completed":
            _register_result(job, result)
        elif result and result["status"] == "stopped" and job.cancel_requested:
            _finish(job, FineTuningJob.Status.CANCELLED, message=f"Job cancelled at step {job.step}; nothing was registered.")
        elif job.attempts >= settings.FINETUNE_MAX_ATTEMPTS:
            _finish(job, FineTuningJob.Status.FAILED, code="training_crashed", level="error",
                    message=f"Training failed {job.attempts} times (last exit status {child.returncode}). {_last_error(log_path)}")
        else:
            job.lease_owner, job.lease_expires_at = "", None
            job.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
            event(job, f"Training stopped unexpectedly (exit status {child.returncode}); trying again.", level="warn")
            from apps.tuning.tasks import run_finetune_job

            transaction.on_commit(lambda: run_finetune_job.delay(job.pk))


def _last_error(log_path: Path) -> str:
    """The last exception line of the child's log: a reason for the user, not a traceback."""
    try:
        lines = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    errors = [l for l in lines if "Error" in l.split(":", 1)[0]]
    return errors[-1][:300] if errors else ""


def _register_result(job: FineTuningJob, result: dict) -> None:
    kind = ModelVersion.Kind.FULL if job.method == FineTuningJob.Method.FULL else ModelVersion.Kind.LORA
    metrics = {k: result[k] for k in ("train_loss", "val_loss_before", "val_loss_after") if result.get(k) is not None}
    metrics.update(steps=result["steps"], trained_tokens=result["tokens_seen"])
    if job.val_loss_before is not None and "val_loss_before" not in metrics:
        metrics["val_loss_before"] = job.val_loss_before  # measured by an earlier attempt, before resuming
    name = model_id_for(job)
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
    _finish(job, FineTuningJob.Status.SUCCEEDED, message=f"Job succeeded: {name} is ready.")


def requeue_stale_jobs() -> list[str]:
    """Beat: a running job whose lease ran out lost its worker. Re-queue it (it resumes) or fail it."""
    from apps.tuning.tasks import run_finetune_job

    requeued = []
    stale = FineTuningJob.objects.filter(status__in=ACTIVE, lease_expires_at__lt=timezone.now()).exclude(lease_owner="")
    for job in stale:
        with transaction.atomic():
            job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
            if not job.lease_owner or job.lease_expires_at >= timezone.now():
                continue
            if job.attempts >= settings.FINETUNE_MAX_ATTEMPTS:
                _finish(job, FineTuningJob.Status.FAILED, code="worker_lost", level="error",
                        message=f"The worker running this job stopped {job.attempts} times; the job failed.")
                continue
            job.lease_owner, job.lease_expires_at = "", None
            job.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
            event(job, f"The worker stopped answering; the job goes back to the queue and resumes from step {job.last_checkpoint_step}.", level="warn")
            transaction.on_commit(lambda pk=job.pk: run_finetune_job.delay(pk))
            requeued.append(job.public_id)
    return requeued


def finetune_job_fail_internal(*, job_id: int) -> None:
    """The runner itself broke (not the training): fail the job with a message, never a traceback."""
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        _finish(job, FineTuningJob.Status.FAILED, code="internal_error", level="error",
                message="The job could not be run because of an internal error. It was logged; please try again.")

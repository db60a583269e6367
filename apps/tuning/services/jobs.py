"""Fine-tuning jobs: create (checked, estimated, held to the limits, queued), cancel, finish (with the owner's notice),
events."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from apps.core.errors import Conflict, InvalidRequest, StoreError
from apps.tuning.dispatch import finetune_job_enqueue
from apps.tuning.hyperparameters import hyperparameters_resolve, training_estimate
from apps.tuning.models import FineTuningJob, JobEvent, TrainingFile
from apps.tuning.services.files import QuotaExceeded, base_version_resolve
from apps.tuning.services.limits import (
    training_budget_check,
    training_job_cap_check,
    training_limits,
    training_limits_check,
)
from apps.tuning.services.versions import (
    base_version_check,
    checkpoint_storage_check,
    register_as_resolve,
)
from apps.webhooks.services import webhook_job_event


def finetune_job_estimate(*, owner, training_file: TrainingFile, method: str, hyperparameters: dict | None) -> dict:
    """What the job form shows before anything is queued: the resolved hyperparameters, steps, tokens and time, the
    limits the job is held to (with what is left of the owner's budget today) and the problem, if it is over one."""
    hyper = hyperparameters_resolve(method=method, examples=training_file.example_count, given=hyperparameters)
    estimate = training_estimate(method=method, hyperparameters=hyper, examples=training_file.example_count,
                                 tokens=training_file.token_count)
    problem = None
    try:
        training_limits_check(user=owner, estimate=estimate, file_tokens=training_file.token_count, n_epochs=hyper["n_epochs"])
    except StoreError as exc:
        problem = {"message": exc.message, "code": exc.code}
    return {"hyperparameters": hyper, **estimate, "limits": training_limits(user=owner), "problem": problem}


def _file_check(*, owner, training_file: TrainingFile, method: str, param: str) -> None:
    if training_file.owner_id != owner.pk:
        raise InvalidRequest(f"No such file: {training_file.public_id}.", param=param, code="file_not_found")
    if training_file.status != TrainingFile.Status.PROCESSED:
        detail = "; ".join(f"line {p['line']}: {p['message']}" if p["line"] else p["message"] for p in training_file.problems[:3])
        raise InvalidRequest(f"{training_file.public_id} is not ready ({training_file.status}){': ' + detail if detail else ''}.",
                             param=param, code="file_not_ready")
    wants_text = method == FineTuningJob.Method.PRETRAIN
    if wants_text != (training_file.format == TrainingFile.Format.TEXT):
        raise InvalidRequest(
            "Continued pre-training takes a plain-text file; lora and full take chat or prompt/completion JSONL.", param=param
        )


def finetune_job_create(
    *, owner, training_file: TrainingFile, model: str, method: str = "lora", validation_file: TrainingFile | None = None,
    hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None,
    register_as: str | None = None,
) -> FineTuningJob:
    if method not in FineTuningJob.Method.values:
        raise InvalidRequest("method is lora, full or pretrain.", param="method")
    for f, param in ((training_file, "training_file"), (validation_file, "validation_file")):
        if f is not None:
            _file_check(owner=owner, training_file=f, method=method, param=param)
    base = base_version_resolve(reference=model, user=owner)
    base_version_check(base=base, owner=owner, method=method)
    target = register_as_resolve(owner=owner, name=register_as)  # the result: the next version of this model
    suffix = slugify(suffix or "")[:40]
    hyper = hyperparameters_resolve(method=method, examples=training_file.example_count, given=hyperparameters)
    estimate = training_estimate(method=method, hyperparameters=hyper, examples=training_file.example_count,
                                 tokens=training_file.token_count)
    training_job_cap_check(estimate=estimate, file_tokens=training_file.token_count, n_epochs=hyper["n_epochs"])
    with transaction.atomic():
        # The owner's row locked: two requests at once cannot both take the last slot or the last of the budget.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if FineTuningJob.objects.filter(owner=owner, status__in=FineTuningJob.ACTIVE).count() >= settings.QUOTA_ACTIVE_JOBS:
            raise QuotaExceeded(f"You already have {settings.QUOTA_ACTIVE_JOBS} jobs queued or running; wait for one to finish.")
        training_budget_check(user=owner, tokens=estimate["tokens"])
        checkpoint_storage_check(user=owner)
        job = FineTuningJob.objects.create(
            owner=owner, base_version=base, base_reference=model, training_file=training_file, validation_file=validation_file,
            method=method, hyperparameters=hyper, suffix=suffix, seed=42 if seed is None else int(seed), estimate=estimate,
            register_as=target,
        )
        job_event_create(job=job, message=f"Created fine-tuning job {job.public_id} ({job.get_method_display()}) on {base.reference}.",
                         data=job.estimate)
        finetune_job_dispatch(job=job)
    return job


def finetune_job_dispatch(*, job: FineTuningJob) -> None:
    """Send the job to the gpu queue once the transaction commits, noting when: a message that no runner takes
    (lost with a worker that fetched it) is sent again by beat (`requeue_stale_jobs`)."""
    job.dispatched_at = timezone.now()
    FineTuningJob.objects.filter(pk=job.pk).update(dispatched_at=job.dispatched_at)
    finetune_job_enqueue(job_id=job.pk)


def job_event_create(*, job: FineTuningJob, message: str, level: str = "info", data: dict | None = None) -> JobEvent:
    return JobEvent.objects.create(job=job, level=level, message=message, data=data or {})


@transaction.atomic
def finetune_job_cancel(*, job: FineTuningJob) -> FineTuningJob:
    job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
    if job.is_finished:
        raise Conflict(f"The job is already {job.status}.")
    if job.status == FineTuningJob.Status.RUNNING and job.lease_owner:
        job.cancel_requested = True  # the runner stops at the end of its current step
        job.save(update_fields=["cancel_requested", "updated_at"])
        job_event_create(job=job, message="Cancellation requested; training stops after the current step.")
    else:
        finetune_job_finish(job=job, status=FineTuningJob.Status.CANCELLED, message="Job cancelled before training started.")
    return job


def finetune_job_model_id(*, job: FineTuningJob) -> str:
    """OpenAI's form: `ft:<root base>:<owner>:<suffix>:<job id>`, the root base found through the lineage."""
    root = job.base_version
    while root.base_version_id is not None:
        root = root.base_version
    root_name = root.registered_model.name
    if root_name.startswith("ft:"):
        root_name = root_name.split(":")[1]
    return f"ft:{root_name}:{job.owner.slug}:{job.suffix}:{job.public_id}"


def finetune_job_finish(*, job: FineTuningJob, status: str, message: str, code: str = "", level: str = "info") -> None:
    """The end of a job: its state, an event, the owner's email and the work folder's removal, on commit."""
    job.status = status
    job.finished_at = timezone.now()
    job.lease_owner, job.lease_expires_at = "", None
    if code:
        job.error_code, job.error_message = code, message
    job.save()
    job_event_create(job=job, message=message, level=level)
    transaction.on_commit(lambda: _notify(job.pk))
    transaction.on_commit(lambda: webhook_job_event(job=job), robust=True)  # a receiver's trouble never fails the job
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


def finetune_job_notices_clear(*, owner, job: FineTuningJob | None = None) -> None:
    """The owner saw the end of their finished jobs (or of this one): the site's notice goes away."""
    jobs = FineTuningJob.objects.filter(owner=owner, owner_notified=False, status__in=FineTuningJob.FINISHED)
    if job is not None:
        jobs = jobs.filter(pk=job.pk)
    jobs.update(owner_notified=True)

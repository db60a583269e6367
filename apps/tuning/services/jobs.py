"""Fine-tuning jobs: create (checked, estimated, held to the limits, queued, or waiting for its files), start once its
files are processed, cancel, finish (with the owner's notice), events."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify

from apps.core.errors import Conflict, InvalidRequest, StoreError
from apps.registry.models import ModelVersion
from apps.tuning.dispatch import finetune_job_enqueue
from apps.tuning.hyperparameters import (
    HYPERPARAMETERS,
    NAMES,
    hyperparameters_resolve,
    training_estimate,
)
from apps.tuning.models import FineTuningJob, JobEvent, TrainingFile
from apps.tuning.services.evaluation import evaluation_split
from apps.tuning.services.files import QuotaExceeded, base_version_resolve
from apps.tuning.services.limits import (
    duration_text,
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
from apps.tuning.trainer.data import MIN_EXAMPLES, label_problems
from apps.tuning.trainer.presets import PRESETS
from apps.webhooks.services import webhook_job_event

# OpenAI's metadata: 16 pairs, keys up to 64 characters, values up to 512.
METADATA_MAX_PAIRS, METADATA_MAX_KEY, METADATA_MAX_VALUE = 16, 64, 512


def finetune_job_estimate(*, owner, training_file: TrainingFile, method: str, hyperparameters: dict | None,
                          validation_file: TrainingFile | None = None) -> dict:
    """What the job form shows before anything is queued: the resolved hyperparameters, steps, tokens and time, the
    limits the job is held to (with what is left of the owner's budget today), the problem, if it is over one, and
    what the base and the tuned model are compared on (`evaluation`: the examples held out without a validation file)."""
    hyper = hyperparameters_resolve(method=method, examples=training_file.example_count, given=hyperparameters)
    scratch_preset_check(method=method, hyperparameters=hyper)
    estimate = training_estimate(method=method, hyperparameters=hyper, examples=training_file.example_count,
                                 tokens=training_file.token_count)
    problem = None
    try:
        training_limits_check(user=owner, estimate=estimate, file_tokens=training_file.token_count, n_epochs=hyper["n_epochs"])
    except StoreError as exc:
        problem = {"message": exc.message, "code": exc.code}
    return {"hyperparameters": hyper, **estimate, "limits": training_limits(user=owner), "problem": problem,
            "evaluation": evaluation_split(training_file=training_file, validation_file=validation_file, method=method)}


def metadata_check(metadata) -> dict:
    """OpenAI's metadata: up to 16 pairs, keys of at most 64 characters, values strings of at most 512."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidRequest("metadata must be an object of string keys and string values.", param="metadata")
    if len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequest(f"metadata holds {len(metadata)} pairs; at most {METADATA_MAX_PAIRS} are allowed.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 0 < len(key) <= METADATA_MAX_KEY:
            raise InvalidRequest(f"metadata keys are strings of 1 to {METADATA_MAX_KEY} characters.", param="metadata")
        if not isinstance(value, str) or len(value) > METADATA_MAX_VALUE:
            raise InvalidRequest(f"metadata[{key!r}] must be a string of at most {METADATA_MAX_VALUE} characters.",
                                 param="metadata")
    return dict(metadata)


def training_file_error(*, training_file: TrainingFile, method: str, role: str) -> StoreError | None:
    """Why the file cannot be the job's `role` ("training" or "validation") file, as OpenAI's error
    (`invalid_training_file` / `invalid_validation_file`, the file's problems with their line numbers); None if it can,
    or if it is still being checked. A file whose check was lost (still `uploaded` after
    TRAINING_FILE_VALIDATION_TIMEOUT) gets `file_validation_timeout`."""
    f, param = training_file, f"{role}_file"
    if f.status == TrainingFile.Status.UPLOADED:
        timeout = settings.TRAINING_FILE_VALIDATION_TIMEOUT
        if f.created_at > timezone.now() - timedelta(seconds=timeout):
            return None
        return InvalidRequest(
            f"The {role} file {f.public_id} was not checked within {duration_text(timeout)} of its upload (the worker "
            "checking it stopped). Upload it again, then create the job again.", param=param, code="file_validation_timeout",
        )
    code = f"invalid_{role}_file"
    if f.status == TrainingFile.Status.ERROR:
        return InvalidRequest(f"The {role} file {f.public_id} has problems: {f.problems_text(limit=10)}.", param=param, code=code)
    if f.format not in METHOD_FORMATS.get(method, ()):
        return InvalidRequest(
            "Continued pre-training and pre-training from scratch take a plain-text file; classification takes JSONL of {\"text\", \"label\"}; lora "
            "and full take chat or prompt/completion JSONL.", param=param, code=code,
        )
    if role == "training" and f.example_count < MIN_EXAMPLES:
        return InvalidRequest(f"The training file {f.public_id} has {f.example_count} example(s); a training file needs at "
                              f"least {MIN_EXAMPLES}.", param=param, code=code)
    if role == "training" and f.format == TrainingFile.Format.CLASSIFICATION:
        problems = label_problems(f.label_counts, training=True)
        if problems:
            return InvalidRequest(f"The training file {f.public_id}: {'; '.join(problems)}.", param=param, code=code)
    return None


# The file formats each method trains on.
METHOD_FORMATS = {
    FineTuningJob.Method.LORA: (TrainingFile.Format.CHAT, TrainingFile.Format.PROMPT_COMPLETION),
    FineTuningJob.Method.FULL: (TrainingFile.Format.CHAT, TrainingFile.Format.PROMPT_COMPLETION),
    FineTuningJob.Method.PRETRAIN: (TrainingFile.Format.TEXT,),
    FineTuningJob.Method.SCRATCH: (TrainingFile.Format.TEXT,),
    FineTuningJob.Method.CLASSIFICATION: (TrainingFile.Format.CLASSIFICATION,),
}


def classification_labels_error(*, training_file: TrainingFile, validation_file: TrainingFile | None) -> StoreError | None:
    """A validation file may only hold labels the training file has (the head has one output per training label)."""
    if validation_file is None or training_file.format != TrainingFile.Format.CLASSIFICATION:
        return None
    unknown = [label for label in validation_file.label_counts if label not in training_file.label_counts]
    if unknown:
        return InvalidRequest(
            f"The validation file {validation_file.public_id} has labels the training file lacks: "
            f"{', '.join(repr(u) for u in unknown[:10])}.", param="validation_file", code="invalid_validation_file",
        )
    return None


def scratch_preset_check(*, method: str, hyperparameters: dict) -> None:
    """The `small` and `base` presets train on a GPU only: refused where no GPU worker takes the gpu queue
    (settings.FINETUNE_GPU_WORKER), rather than queued for days on a CPU."""
    if method != FineTuningJob.Method.SCRATCH or settings.FINETUNE_GPU_WORKER:
        return
    name = hyperparameters["preset"]
    if PRESETS[name].gpu_only:
        cpu = ", ".join(n for n, p in PRESETS.items() if not p.gpu_only)
        raise InvalidRequest(
            f"The {name} preset trains on a GPU, and this store has no GPU worker: choose {cpu} (or ask the store's staff "
            "to add a GPU worker).", param="hyperparameters.preset", code="preset_needs_gpu",
        )


def base_format_check(*, base, training_file: TrainingFile, method: str) -> None:
    """A plain language model (task `text`, such as one pre-trained from scratch) has no chat template: it is
    fine-tuned on prompt/completion JSONL or plain text, never on chat messages."""
    if (base.task == ModelVersion.Task.TEXT and training_file.format == TrainingFile.Format.CHAT
            and method != FineTuningJob.Method.SCRATCH):
        raise InvalidRequest(
            f"{base.reference} is a plain language model with no chat template: fine-tune it with prompt/completion "
            "JSONL or plain text (continued pre-training), not chat messages.", param="training_file",
            code="invalid_training_file",
        )


def _job_files(training: TrainingFile, validation: TrainingFile | None) -> list[tuple[TrainingFile, str]]:
    return [(f, role) for f, role in ((training, "training"), (validation, "validation")) if f is not None]


def _job_plan(*, training_file: TrainingFile, validation_file: TrainingFile | None, method: str, given: dict | None):
    """The hyperparameters and estimate of a job whose files are processed; raises the StoreError that stops it."""
    for f, role in _job_files(training_file, validation_file):
        error = training_file_error(training_file=f, method=method, role=role)
        if error:
            raise error
    error = classification_labels_error(training_file=training_file, validation_file=validation_file)
    if error:
        raise error
    hyper = hyperparameters_resolve(method=method, examples=training_file.example_count, given=given)
    scratch_preset_check(method=method, hyperparameters=hyper)
    estimate = training_estimate(method=method, hyperparameters=hyper, examples=training_file.example_count,
                                 tokens=training_file.token_count)
    training_job_cap_check(estimate=estimate, file_tokens=training_file.token_count, n_epochs=hyper["n_epochs"])
    split = evaluation_split(training_file=training_file, validation_file=validation_file, method=method)
    if split:  # the job's estimate (and its first event) say what it is evaluated on
        estimate["evaluation"] = split
    return hyper, estimate


def finetune_job_create(
    *, owner, training_file: TrainingFile, model: str, method: str = "lora", validation_file: TrainingFile | None = None,
    hyperparameters: dict | None = None, suffix: str = "", seed: int | None = None, metadata: dict | None = None,
    register_as: str | None = None,
) -> FineTuningJob:
    """A job is accepted while its files are still being checked (as OpenAI's): it waits in `validating_files`
    and starts when the last of them is processed (`finetune_job_start_waiting`). What can be checked now is."""
    if method not in FineTuningJob.Method.values:
        raise InvalidRequest(f"method is one of {', '.join(FineTuningJob.Method.values)}.", param="method")
    files = _job_files(training_file, validation_file)
    for f, role in files:
        if f.owner_id != owner.pk:
            raise InvalidRequest(f"No such file: {f.public_id}.", param=f"{role}_file", code="file_not_found")
        error = training_file_error(training_file=f, method=method, role=role)
        if error:
            raise error
    metadata = metadata_check(metadata)
    base = base_version_resolve(reference=model, user=owner)
    base_version_check(base=base, owner=owner, method=method)
    if training_file.status == TrainingFile.Status.PROCESSED:
        base_format_check(base=base, training_file=training_file, method=method)
    target = register_as_resolve(owner=owner, name=register_as)  # the result: the next version of this model
    suffix = slugify(suffix or "")[:40]
    ready = all(f.status == TrainingFile.Status.PROCESSED for f, _ in files)
    if ready:
        hyper, estimate = _job_plan(training_file=training_file, validation_file=validation_file, method=method,
                                    given=hyperparameters)
    else:
        # The given values are checked now; `auto` is chosen from the file's example count once it is processed.
        scratch_preset_check(method=method, hyperparameters=hyperparameters_resolve(method=method, examples=0, given=hyperparameters))
        given = hyperparameters or {}
        # Only the method's own (a LoRA job has no preset): as _job_plan resolves them once the files are processed.
        hyper = {h.name: "auto" if given.get(h.name) in (None, "") else given[h.name]
                 for h in HYPERPARAMETERS if h.applies(method)}
        estimate = {}
    with transaction.atomic():
        # The owner's row locked: two requests at once cannot both take the last slot or the last of the budget.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        if FineTuningJob.objects.filter(owner=owner, status__in=FineTuningJob.ACTIVE).count() >= settings.QUOTA_ACTIVE_JOBS:
            raise QuotaExceeded(f"You already have {settings.QUOTA_ACTIVE_JOBS} jobs queued or running; wait for one to finish.")
        if ready:
            training_budget_check(user=owner, tokens=estimate["tokens"])
        checkpoint_storage_check(user=owner)
        job = FineTuningJob.objects.create(
            owner=owner, base_version=base, base_reference=model, training_file=training_file, validation_file=validation_file,
            method=method, hyperparameters=hyper, suffix=suffix, seed=42 if seed is None else int(seed), estimate=estimate,
            metadata=metadata, register_as=target,
        )
        job_event_create(job=job, message=f"Created fine-tuning job {job.public_id} ({job.get_method_display()}) on {base.reference}.",
                         data=job.estimate)
        if ready:
            finetune_job_dispatch(job=job)
        else:
            waiting = ", ".join(f.public_id for f, _ in files if f.status != TrainingFile.Status.PROCESSED)
            job_event_create(job=job, message=f"Waiting for {waiting} to be processed; the job starts once it is.")
            # A file processed while this job was being created found no waiting job: look again once it is committed.
            transaction.on_commit(lambda: finetune_job_start_waiting(job_id=job.pk))
    return job


def finetune_job_start_waiting(*, job_id: int) -> bool:
    """Start a job that waits for its files (in `validating_files`, never sent to the gpu queue): once every file is
    processed its hyperparameters and estimate are chosen, the limits checked and the job sent; a file that ended in
    `error`, a check that was lost or a limit fails the job with OpenAI's error. True if the job was sent."""
    job = FineTuningJob.objects.select_related("training_file", "validation_file").filter(pk=job_id).first()
    if job is None or job.status != FineTuningJob.Status.VALIDATING_FILES or job.dispatched_at is not None:
        return False
    files = _job_files(job.training_file, job.validation_file)
    errors = [training_file_error(training_file=f, method=job.method, role=role) for f, role in files]
    if not any(errors) and any(f.status == TrainingFile.Status.UPLOADED for f, _ in files):
        return False  # still being checked
    with transaction.atomic():
        # Claimed with one conditional UPDATE: the file's task and beat's sweep cannot both start it, and a job
        # cancelled meanwhile stays cancelled.
        if not FineTuningJob.objects.filter(pk=job.pk, status=FineTuningJob.Status.VALIDATING_FILES, dispatched_at__isnull=True).update(
            dispatched_at=timezone.now()
        ):
            return False
        get_user_model().objects.select_for_update().filter(pk=job.owner_id).first()  # the budget, as at create
        job = FineTuningJob.objects.select_related("training_file", "validation_file", "owner").get(pk=job.pk)
        given = {k: v for k, v in job.hyperparameters.items() if k in NAMES}
        try:
            hyper, estimate = _job_plan(training_file=job.training_file, validation_file=job.validation_file,
                                        method=job.method, given=given)
            training_budget_check(user=job.owner, tokens=estimate["tokens"])
        except StoreError as exc:
            finetune_job_finish(job=job, status=FineTuningJob.Status.FAILED, code=exc.code, level="error", message=exc.message)
            return False
        job.hyperparameters, job.estimate = hyper, estimate
        job.save(update_fields=["hyperparameters", "estimate", "updated_at"])
        job_event_create(job=job, message="Files processed; the job is queued.", data=estimate)
        finetune_job_enqueue(job_id=job.pk)
    return True


def finetune_jobs_start_waiting(*, training_file: TrainingFile | None = None) -> list[str]:
    """Start the jobs waiting for their files (those naming `training_file`, or all: beat's sweep). Their ids."""
    waiting = FineTuningJob.objects.filter(status=FineTuningJob.Status.VALIDATING_FILES, dispatched_at__isnull=True)
    if training_file is not None:
        waiting = waiting.filter(Q(training_file=training_file) | Q(validation_file=training_file))
    return [public_id for pk, public_id in waiting.values_list("pk", "public_id") if finetune_job_start_waiting(job_id=pk)]


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
    """OpenAI's form: `ft:<root base>:<owner>:<suffix>:<job id>`, the root base found through the lineage; a model
    pre-trained from scratch is a root of its own, `scratch-<preset>` (`ft:scratch-tiny:alice::ftjob-...`)."""
    if job.method == FineTuningJob.Method.SCRATCH:
        return f"ft:scratch-{job.hyperparameters['preset']}:{job.owner.slug}:{job.suffix}:{job.public_id}"
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

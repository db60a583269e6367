"""Reads of customization, scoped to the owner.

`access_training_file` and `access_job` (Zulip's `access_*` helpers) are the one permission check for files
and jobs on every face (pages, /api/v1, /v1): they return the caller's own object, or raise NotFound. Files and
jobs are private, so another user's object is a 404 like a missing one, never a 403.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.models import Q, Sum
from django.db.models.fields.json import KeyTransform

from apps.core.errors import NotFound
from apps.registry.models import ModelVersion, RegisteredModel
from apps.tuning.models import FineTuningJob, JobCheckpoint, TrainingFile


def access_training_file(*, user, public_id: str) -> TrainingFile:
    f = TrainingFile.objects.filter(owner=user, public_id=public_id).first() if user.is_authenticated else None
    if f is None:
        raise NotFound(f"No such File object: {public_id}", code="file_not_found")
    return f


def access_job(*, user, public_id: str) -> FineTuningJob:
    job = (
        FineTuningJob.objects.filter(owner=user, public_id=public_id)
        .select_related("training_file", "validation_file", "result_version").first()
        if user.is_authenticated else None
    )
    if job is None:
        raise NotFound(f"No such fine-tuning job: {public_id}", code="job_not_found")
    return job


def training_file_list(*, user, status: str | None = None):
    files = TrainingFile.objects.filter(owner=user)
    return files.filter(status=status) if status else files


def finetune_job_list(*, user, status: str | None = None, metadata: dict[str, str] | None = None, metadata_null: bool = False):
    """The user's jobs; `metadata` keeps those whose metadata holds every given pair (OpenAI's `metadata[k]=v`),
    `metadata_null` those with none (OpenAI's `metadata=null`)."""
    jobs = FineTuningJob.objects.filter(owner=user).select_related("training_file", "validation_file")
    if status:
        jobs = jobs.filter(status=status)
    if metadata_null:
        jobs = jobs.filter(metadata={})
    for i, (key, value) in enumerate((metadata or {}).items()):
        # KeyTransform: the key as it is (a `metadata__<key>` lookup would split a key holding `__`); compared as JSON.
        jobs = jobs.alias(**{f"_metadata_{i}": KeyTransform(key, "metadata")}).filter(**{f"_metadata_{i}": value})
    return jobs


def job_metadata_query(params) -> dict:
    """`finetune_job_list`'s metadata filter from a query string, OpenAI's form: `metadata[k]=v` (each pair), or
    `metadata=null`."""
    pairs = {k[len("metadata["):-1]: v for k, v in params.items() if k.startswith("metadata[") and k.endswith("]")}
    return {"metadata": pairs, "metadata_null": params.get("metadata") == "null"}


def finished_job_notices(*, user) -> list[tuple[str, str]]:
    """The site's notice that a job ended (an email goes out too): (job id, status) of up to three jobs whose end
    the owner has not seen yet."""
    jobs = FineTuningJob.objects.filter(owner=user, owner_notified=False, status__in=FineTuningJob.FINISHED)
    return list(jobs.values_list("public_id", "status")[:3])


def finetune_job_eta_seconds(*, job: FineTuningJob) -> int | None:
    """Seconds until a running job ends, from the pace of its last steps; None when unknown (not running, or fewer
    than two steps measured). The job page shows it, and /v1 adds it to now as `estimated_finish`."""
    if job.status != FineTuningJob.Status.RUNNING:
        return None
    recent = list(job.metrics.filter(train_loss__isnull=False).order_by("-id")[:10])
    if len(recent) < 2 or recent[0].step <= recent[-1].step:
        return None
    per_step = (recent[0].created_at - recent[-1].created_at).total_seconds() / (recent[0].step - recent[-1].step)
    return round(per_step * max(0, job.total_steps - job.step))


def finetune_job_estimated_finish(*, job: FineTuningJob) -> int | None:
    """OpenAI's `estimated_finish`: Unix seconds when a running job should end; None when unknown."""
    eta = finetune_job_eta_seconds(job=job)
    return None if eta is None else int(time.time()) + eta


def finetune_job_state(*, job: FineTuningJob, after_metric: int = 0, after_event: int = 0) -> dict:
    """What the job page polls: status, progress, ETA, and the metrics and events it has not seen yet."""
    eta = finetune_job_eta_seconds(job=job)
    queue_position = None
    waiting = (FineTuningJob.Status.VALIDATING_FILES, FineTuningJob.Status.QUEUED)
    if job.status in waiting:
        queue_position = FineTuningJob.objects.filter(status__in=waiting, created_at__lt=job.created_at).count() + 1
    return {
        "id": job.public_id, "status": job.status, "status_label": job.get_status_display(), "step": job.step,
        "total_steps": job.total_steps, "progress": job.progress, "eta_seconds": eta, "queue_position": queue_position,
        "fine_tuned_model": job.fine_tuned_model or None, "error": job.error_message or None,
        "val_loss_before": job.val_loss_before, "val_loss_after": job.val_loss_after,
        "metrics": [
            {"id": m.pk, "step": m.step, "train_loss": m.train_loss, "val_loss": m.val_loss, "tokens_per_second": m.tokens_per_second}
            for m in job.metrics.filter(pk__gt=after_metric)
        ],
        "events": [{"id": e.pk, "level": e.level, "message": e.message, "at": e.created_at.isoformat()} for e in job.events.filter(pk__gt=after_event)],
    }


def registered_model_deletion_refusal(registered_model: RegisteredModel) -> str | None:
    """Why a model must stay, as customization sees it: a job still trains from it (or will register its result into
    it), or fine-tunes are built on it or on one of its kept checkpoints (`<id>:ckpt-step-<N>`, which go with it).
    TuningConfig.ready() registers this with the registry, which never imports customization."""
    active = FineTuningJob.objects.filter(status__in=FineTuningJob.ACTIVE).filter(
        Q(base_version__registered_model=registered_model) | Q(register_as=registered_model)
    )
    job = active.values_list("public_id", flat=True).first()
    if job:
        return f"The fine-tuning job {job} uses this model: cancel it or wait for it to end."
    family = RegisteredModel.objects.filter(Q(pk=registered_model.pk) | Q(name__startswith=f"{registered_model.name}:ckpt-step-"))
    children = ModelVersion.objects.filter(base_version__registered_model__in=family).exclude(registered_model__in=family)
    names = sorted(set(children.values_list("registered_model__name", flat=True)[:5]))
    if names:
        return f"Fine-tunes are built on this model or its checkpoints ({', '.join(names)}): delete them first."
    return None


def checkpoint_storage_used(*, user) -> int:
    """Bytes of the user's kept checkpoints (their registered versions)."""
    kept = JobCheckpoint.objects.filter(job__owner=user, model_version__isnull=False)
    return kept.aggregate(n=Sum("model_version__size_bytes"))["n"] or 0


def checkpoint_storage(*, user) -> dict:
    """What the account page shows: used, the cap, and the share used."""
    used, cap = checkpoint_storage_used(user=user), settings.QUOTA_CHECKPOINT_BYTES
    return {"used": used, "cap": cap, "percent": min(100, round(100 * used / cap)) if cap else 100,
            "count": JobCheckpoint.objects.filter(job__owner=user, model_version__isnull=False).count()}


def job_checkpoint_list(*, job: FineTuningJob):
    """A job's kept checkpoints that can be called (registered as models)."""
    return JobCheckpoint.objects.filter(job=job, model_version__isnull=False).select_related(
        "job", "model_version__registered_model")


def evaluation_summary(*, evaluation: dict) -> dict | None:
    """A job's evaluation (services/evaluation.py) as its page shows it: the loss change from base to tuned, exact
    matches as counts, the answer pairs and the gate's decision. None before the job has figures."""
    split = (evaluation or {}).get("split")
    if not split:
        return None
    base, tuned = evaluation.get("base") or {}, evaluation.get("tuned") or {}
    items = evaluation.get("exact_match_items") or 0

    def matches(side: dict) -> int | None:
        return None if side.get("exact_match") is None else round(side["exact_match"] * items)

    delta = tuned["loss"] - base["loss"] if tuned.get("loss") is not None and base.get("loss") is not None else None
    return {
        "split": split, "base": base, "tuned": tuned, "current": evaluation.get("current"), "delta": delta,
        "items": items, "base_matches": matches(base), "tuned_matches": matches(tuned),
        "pairs": evaluation.get("pairs") or [], "gate": evaluation.get("gate"),
    }

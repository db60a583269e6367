"""Reads of customization, scoped to the owner: another user's file or job is a 404, never a 403."""

from apps.core.errors import NotFound
from apps.tuning.models import FineTuningJob, TrainingFile


def training_file_get(*, user, public_id: str) -> TrainingFile:
    f = TrainingFile.objects.filter(owner=user, public_id=public_id).first() if user.is_authenticated else None
    if f is None:
        raise NotFound(f"No such File object: {public_id}", code="file_not_found")
    return f


def finetune_job_get(*, user, public_id: str) -> FineTuningJob:
    job = (
        FineTuningJob.objects.filter(owner=user, public_id=public_id).select_related("training_file", "validation_file").first()
        if user.is_authenticated else None
    )
    if job is None:
        raise NotFound(f"No such fine-tuning job: {public_id}", code="job_not_found")
    return job

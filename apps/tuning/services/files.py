"""Training files: upload (size and quota checked, validation queued), validation against the base model, delete."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum

from apps.core.errors import Conflict, InvalidRequest, StoreError
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_resolve
from apps.tuning.dispatch import training_file_validation_enqueue
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.trainer.data import label_counts, validate_file

logger = logging.getLogger(__name__)


class FileTooLarge(StoreError):
    status = 413
    code = "file_too_large"


class QuotaExceeded(StoreError):
    status = 429
    code = "quota_exceeded"


def base_version_resolve(*, reference: str | None = None, user=None) -> ModelVersion:
    """The version a reference names; no reference: the store's base model (settings.BASE_MODEL_ID)."""
    return model_version_resolve(reference=reference or settings.BASE_MODEL_ID, user=user)


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
        training_file_validation_enqueue(file_id=training_file.pk)
    return training_file


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    # Not a cycle: transformers loads only in the worker that validates files, never in the web tier.
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


def training_file_validate(*, file_id: int) -> TrainingFile:
    """Check the file against the base model's tokenizer and context; every problem keeps its line number.

    A file is uploaded for either role, so it needs one example here: a training file's minimum (MIN_EXAMPLES, as
    OpenAI's) is checked when a job names it (`training_file_problem`); a validation file has none (OpenAI's)."""
    training_file = TrainingFile.objects.get(pk=file_id)
    count, context = _token_counter(base_version_resolve())
    expected = "text" if training_file.filename.lower().endswith(".txt") else None
    try:
        report = validate_file(
            Path(training_file.file.path), expected=expected, max_bytes=settings.TRAINING_FILE_MAX_BYTES,
            min_examples=1, count_tokens=count, max_tokens=context, training_labels=False,
        )
    except OSError as exc:
        # The worker cannot read what web stored (a storage that is not shared, a file removed): the file ends in
        # `error` with a reason instead of staying `uploaded` for ever.
        logger.error("training file %s cannot be read by this worker: %s", training_file.pk, exc)
        training_file.status = TrainingFile.Status.ERROR
        training_file.problems = [{"line": None, "message": "The store could not read the uploaded file; upload it again."}]
        training_file.save(update_fields=["status", "problems", "updated_at"])
        return training_file
    training_file.format = report.format or ""
    training_file.example_count = len(report.examples)
    training_file.token_count = report.tokens
    training_file.preview = report.preview(3)
    training_file.label_counts = label_counts(report.examples) if report.format == "classification" else {}
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

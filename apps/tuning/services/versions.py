"""Where a job's models come from and go to: its base (the store's base model, a full fine-tune, or one of the
owner's LoRA fine-tunes: a chain of adapters), its result (a model of its own, or the next version of one of the
owner's models: `register_as`), the alias `latest` (one gate, `result_version_promote`), and its kept checkpoints
(models of their own, `<job's model id>:ckpt-step-<N>`, counted against QUOTA_CHECKPOINT_BYTES).

Imports only the registry and the tuning models: `jobs` (job creation) and `runner` (registration) both use it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction

from apps.core.errors import Forbidden, InvalidRequest, NotFound, StoreError
from apps.inference.layout import ADAPTER_CHAIN_MAX, LayoutError
from apps.registry.models import ModelAlias, ModelVersion, RegisteredModel
from apps.registry.references import DEFAULT_ALIAS
from apps.registry.selectors import (
    access_registered_model_owned,
    model_version_weights_chain,
)
from apps.registry.services import model_alias_move, model_version_register
from apps.tuning.models import FineTuningJob, JobCheckpoint, JobEvent
from apps.tuning.selectors import checkpoint_storage_used
from apps.tuning.services.limits import duration_text
from apps.tuning.trainer.presets import PRESETS, perplexity

logger = logging.getLogger(__name__)
CHECKPOINT_MARK = ":ckpt-step-"


class CheckpointStorageExceeded(StoreError):
    status = 429
    code = "checkpoint_storage_exceeded"


# --- Before a job: its base, its target, the owner's room ---------------------------------------------------------
def base_version_check(*, base: ModelVersion, owner, method: str) -> None:
    """A job starts from full weights, or from one of the owner's LoRA fine-tunes (trained on its merged chain; a
    LoRA result then stacks one more adapter, up to ADAPTER_CHAIN_MAX). A classifier is no base: its head replaced
    the language-model output layer."""
    if base.task == ModelVersion.Task.CLASSIFIER:
        raise InvalidRequest(f"{base.reference} is a classifier: fine-tune a chat or language model instead.", param="model")
    if base.kind == ModelVersion.Kind.FULL:
        return
    if base.registered_model.owner_id != owner.pk:
        raise InvalidRequest("A LoRA fine-tune can be fine-tuned again by its owner only.", param="model")
    _, adapters = model_version_weights_chain(version=base)
    if method != FineTuningJob.Method.FULL and len(adapters) >= ADAPTER_CHAIN_MAX:
        raise InvalidRequest(
            f"{base.reference} already stacks {len(adapters)} LoRA adapters, the most a model may have: fine-tune it with "
            "method full (full weights), or start from a model nearer the base.", param="model",
        )


def register_as_resolve(*, owner, name: str | None) -> RegisteredModel | None:
    """The model a job's result becomes the next version of: one of the owner's own models, not a checkpoint.
    Another user's private model is a 404 (no hint it exists); the store's models and others' public ones a 400."""
    if not name:
        return None
    try:
        model = access_registered_model_owned(user=owner, name=name)
    except NotFound as exc:
        raise NotFound(f"The model {name!r} does not exist.", code="model_not_found", param="register_as") from exc
    except Forbidden as exc:
        raise InvalidRequest(f"register_as must name one of your own models; {name!r} is not yours.",
                             param="register_as", code="invalid_register_as") from exc
    if CHECKPOINT_MARK in model.name:
        raise InvalidRequest(f"{name!r} is a checkpoint: a checkpoint never gets new versions.", param="register_as",
                             code="invalid_register_as")
    return model


def checkpoint_storage_check(*, user) -> None:
    """A new job is refused while the user's kept checkpoints fill their storage (nothing is dropped silently:
    an app may run on a checkpoint). A running job keeps its checkpoints even if they take the user over."""
    used, cap = checkpoint_storage_used(user=user), settings.QUOTA_CHECKPOINT_BYTES
    if used >= cap:
        raise CheckpointStorageExceeded(
            f"Your kept checkpoints take {used / 2**20:,.1f} MiB of your {cap / 2**20:,.1f} MiB: delete some "
            "checkpoint models (`...:ckpt-step-N`, on their model pages or with DELETE /v1/models/{id}) before "
            "starting another job."
        )


# --- The trainer's base ----------------------------------------------------------------------------------------
def trainer_base(*, job: FineTuningJob) -> dict:
    """The trainer's view of the job's base: the full weights at the root and the adapters merged onto them."""
    root, adapters = model_version_weights_chain(version=job.base_version)
    return {"base_model": str(root.path), "base_adapters": [str(a.path) for a in adapters]}


# --- After a job: the result, `latest`, the kept checkpoints -----------------------------------------------------
ADAPTER_METHODS = (FineTuningJob.Method.LORA, FineTuningJob.Method.PRETRAIN)  # their result is a LoRA adapter


def scratch_options(*, job: FineTuningJob) -> dict:
    """The trainer's preset and tokenizer of a job that pre-trains from scratch (nothing for another method)."""
    if job.method != FineTuningJob.Method.SCRATCH:
        return {}
    return {"preset": job.hyperparameters["preset"], "tokenizer": job.hyperparameters["tokenizer"]}


def result_task(*, job: FineTuningJob) -> str:
    """What the job's model does: a model pre-trained from scratch is a plain language model (no chat template),
    a classification job's a classifier; a fine-tune does what its base does."""
    if job.method == FineTuningJob.Method.SCRATCH:
        return ModelVersion.Task.TEXT
    if job.method == FineTuningJob.Method.CLASSIFICATION:
        return ModelVersion.Task.CLASSIFIER
    return job.base_version.task


def result_base(*, job: FineTuningJob) -> ModelVersion | None:
    """The version the result's weights come from (its lineage): none for a model pre-trained from scratch (the
    job's base lent it only its tokenizer, which the model card names)."""
    return None if job.method == FineTuningJob.Method.SCRATCH else job.base_version


def result_description(*, job: FineTuningJob, metrics: dict) -> str:
    """The model card's description; for a model pre-trained from scratch what it was trained on, how long, on how
    many tokens, its preset and its held-out perplexity (added to `metrics` too: `perplexity_before`/`_after`)."""
    if job.method != FineTuningJob.Method.SCRATCH:
        return f"Fine-tuned from {job.base_version.reference} by job {job.public_id} ({job.get_method_display()})."
    for when in ("before", "after"):
        loss = metrics.get(f"val_loss_{when}")
        if loss is not None:
            metrics[f"perplexity_{when}"] = round(perplexity(loss), 3)
    hyper = job.hyperparameters
    tokenizer = (f"the tokenizer of {job.base_version.reference}" if hyper["tokenizer"] == "base"
                 else "a byte-level BPE tokenizer trained on the same text (served by the transformers engine only)")
    preset = PRESETS[hyper["preset"]]
    after = metrics.get("perplexity_after")
    before = metrics.get("perplexity_before")
    return (
        f"Pre-trained from scratch (random initialisation, Llama architecture) by job {job.public_id}: preset "
        f"{hyper['preset']} ({preset.layers} layers, hidden size {preset.hidden}, context {preset.context} tokens), "
        f"{tokenizer}; trained on {job.training_file.filename} for {metrics.get('steps', 0)} steps, "
        f"{metrics.get('trained_tokens', 0):,} tokens, in {duration_text(round(job.training_seconds))}. "
        + (f"Held-out perplexity {after:,.2f}" + (f" (untrained: {before:,.0f})" if before is not None else "") + ". "
           if after is not None else "")
        + "A plain language model, with no chat template: use it for completions and generator apps, or fine-tune it."
    )


def result_version_promote(*, job: FineTuningJob, version: ModelVersion, gate: dict | None = None) -> bool:
    """Move `latest` to a job's new version: a model's first version always, a later one only if the evaluation gate
    passed it (`services.evaluation.evaluation_gate`, decided on held-out data before the version was registered)
    and `latest` still names the version it was compared with. Otherwise the version stays a candidate, one alias move
    away for its owner (as the previous version stays, for a rollback). True if `latest` moved."""
    with transaction.atomic():
        latest = (ModelAlias.objects.select_for_update().select_related("version__registered_model")
                  .filter(registered_model=version.registered_model, name=DEFAULT_ALIAS).first())
        if latest is not None and not (gate and gate["passed"] and latest.version.reference == gate["compared_with"]):
            return False
        model_alias_move(version=version, alias=DEFAULT_ALIAS, moved_by=job.owner)
    return True


def kept_checkpoints_register(*, job: FineTuningJob, model_id: str, kind: str, kept: list[dict],
                              task: str = ModelVersion.Task.CHAT) -> list[ModelVersion]:
    """Each kept checkpoint (the trainer's `kept_checkpoints`) becomes a model of its own, `<model_id>:ckpt-step-<N>`,
    private to the owner, with its step's metrics, linked from the job's checkpoint row."""
    versions = []
    for checkpoint in kept:
        step, epoch, metrics = checkpoint["step"], checkpoint.get("epoch", 0), checkpoint.get("metrics") or {}
        name = f"{model_id}{CHECKPOINT_MARK}{step}"
        try:
            version = _checkpoint_register(job=job, name=name, kind=kind, task=task, checkpoint=checkpoint)
        except (StoreError, LayoutError, OSError) as exc:  # the job's own model is registered: a checkpoint never fails it
            logger.exception("job %s: checkpoint at step %s was not registered", job.public_id, step)
            JobEvent.objects.create(job=job, level=JobEvent.Level.WARN, data={"step": step},
                                    message=f"The checkpoint at step {step} could not be kept: {exc}")
            continue
        JobCheckpoint.objects.update_or_create(job=job, step=step, defaults={"epoch": epoch, "metrics": metrics,
                                                                              "model_version": version})
        versions.append(version)
    return versions


def _checkpoint_register(*, job: FineTuningJob, name: str, kind: str, task: str, checkpoint: dict) -> ModelVersion:
    step, epoch, metrics = checkpoint["step"], checkpoint.get("epoch", 0), checkpoint.get("metrics") or {}
    return model_version_register(
        name=name, source_dir=Path(checkpoint["path"]), kind=kind, task=task, owner=job.owner,
        base_version=result_base(job=job), description=f"Checkpoint of job {job.public_id} at step {step} (end of epoch {epoch}).",
        datasets=[job.training_file.filename], metrics=metrics,
        source={"job": job.public_id, "checkpoint_step": step, "epoch": epoch, "base": job.base_version.reference,
                "method": job.method},
        created_by_job=job.public_id, created_by=job.owner, move=True,
    )

"""Writes to the registry. A version is copied into place atomically and never changes; aliases move."""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Max, ProtectedError, RestrictedError

from apps.core.errors import Conflict, InvalidRequest, StoreError
from apps.registry import artifacts
from apps.registry.exports import gguf_export_enqueue
from apps.registry.models import (
    ModelAlias,
    ModelAliasMove,
    ModelVersion,
    RegisteredModel,
)
from apps.registry.references import DEFAULT_ALIAS
from apps.registry.selectors import (
    model_version_lineage,
    registered_model_require_owner,
)

logger = logging.getLogger(__name__)
STAGING_PREFIX = ".staging-"

# A reason to refuse deleting a model (None: no objection). The apps above the registry register theirs from
# their AppConfig.ready() (the catalog: apps still run on the model), so the registry asks without importing them.
DeletionGuard = Callable[[RegisteredModel], str | None]
deletion_guards: list[DeletionGuard] = []


def deletion_guard_register(guard: DeletionGuard) -> None:
    if guard not in deletion_guards:  # registering twice is harmless
        deletion_guards.append(guard)


class ChecksumMismatch(StoreError):
    status = 409
    code = "checksum_mismatch"


def _root() -> Path:
    root = Path(settings.MODELS_REGISTRY_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root


def registered_model_get_or_create(
    *, name: str, owner=None, visibility: str | None = None, description: str = ""
) -> RegisteredModel:
    if "@" in name or not name.strip():
        raise InvalidRequest(f"{name!r} is not a valid model id ('@' is reserved for versions and aliases).")
    visibility = visibility or (RegisteredModel.Visibility.PUBLIC if owner is None else RegisteredModel.Visibility.PRIVATE)
    model, _ = RegisteredModel.objects.get_or_create(
        name=name,
        defaults={
            "folder": artifacts.folder_for_model_id(name),
            "owner": owner,
            "visibility": visibility,
            "description": description,
        },
    )
    if model.owner_id != (owner.pk if owner is not None else None):
        raise Conflict(f"The model id {name!r} belongs to someone else.")
    return model


def model_version_register(
    *,
    name: str,
    source_dir: Path,
    kind: str = ModelVersion.Kind.FULL,
    task: str = ModelVersion.Task.CHAT,
    owner=None,
    visibility: str | None = None,
    description: str = "",
    base_version: ModelVersion | None = None,
    base_model_card_id: str | None = None,
    datasets: list[str] | None = None,
    metrics: dict | None = None,
    source: dict | None = None,
    created_by_job: str = "",
    created_by=None,
    aliases: tuple[str, ...] = (DEFAULT_ALIAS,),
    move: bool = False,
) -> ModelVersion:
    """Register the folder `source_dir` as the next version of model `name` and point `aliases` at it.

    The files are staged in a hidden folder, given a model card, checksummed, then renamed into place inside the
    transaction that creates the `ready` row: other processes see either nothing or a complete version.
    `move=True` takes the source folder over instead of copying it (for a temporary folder the caller made).
    """
    source_dir = Path(source_dir)
    artifacts.check_layout(source_dir, kind=kind)
    model = registered_model_get_or_create(name=name, owner=owner, visibility=visibility, description=description)
    metrics = dict(metrics or {})
    card = artifacts.render_model_card(
        model_id=name,
        base_model=base_model_card_id or (base_version.registered_model.name if base_version else None),
        kind=kind,
        description=description or model.description,
        datasets=datasets,
        metrics=metrics,
        source=source,
        # base -> first fine-tune -> ... -> this model: the versions its weights come from
        lineage=[v.reference for v in model_version_lineage(version=base_version)] + [name] if base_version else None,
        task=task,
    )
    model_dir = _root() / model.folder
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex}"
    try:
        _stage(source_dir, staging, move=move)
        checksums = _seal(staging, metrics=metrics, card=card)
        version = _commit(
            model,
            staging,
            aliases=aliases,
            kind=kind,
            task=task,
            base_version=base_version,
            size_bytes=artifacts.folder_size(staging),
            checksums=checksums,
            metrics=metrics,
            source=dict(source or {}),
            created_by_job=created_by_job,
            created_by=created_by,
        )
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    gguf_export_enqueue(version=version)
    return version


def _stage(source_dir: Path, staging: Path, *, move: bool) -> None:
    """Put the files in the hidden staging folder: moved when asked and possible, copied otherwise."""
    if move:
        try:
            os.rename(source_dir, staging)
            return
        except OSError:  # another filesystem: copy instead
            pass
    shutil.copytree(source_dir, staging)


def _seal(staging: Path, *, metrics: dict, card: str) -> dict[str, str]:
    """Add the metrics and the model card, checksum every file and make the folder read-only: the version's
    files never change from here on. Returns the checksums."""
    artifacts.write_metrics(staging, metrics)
    (staging / artifacts.CARD_FILE).write_text(card, encoding="utf-8")
    checksums = artifacts.compute_checksums(staging)
    artifacts.write_checksums(staging, checksums)
    artifacts.make_read_only(staging)
    return checksums


def _commit(model: RegisteredModel, staging: Path, *, aliases: tuple[str, ...], **fields) -> ModelVersion:
    """Number the version, create its ready row, move the aliases and rename the staged folder into place."""
    with transaction.atomic():
        model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        number = (model.versions.aggregate(n=Max("number"))["n"] or 0) + 1
        final = staging.parent / str(number)
        if final.exists():
            # Left by a registration whose commit failed after its rename: no row names it.
            logger.warning("removing orphan version folder %s", final)
            shutil.rmtree(final)
        version = ModelVersion.objects.create(
            registered_model=model, number=number, artifact_path=f"{model.folder}/{number}", **fields
        )
        for alias in aliases:
            model_alias_move(version=version, alias=alias, moved_by=fields.get("created_by"))
        os.rename(staging, final)
        # If the commit fails now, the folder is an orphan that the next registration removes.
    return version


@transaction.atomic
def model_alias_move(*, version: ModelVersion, alias: str, moved_by=None) -> ModelAlias:
    """Point `alias` of the version's model at `version`, recording the move (no row when nothing changes)."""
    if version.status != ModelVersion.Status.READY:
        raise Conflict(f"{version} is not ready; an alias can only point at a ready version.")
    model = version.registered_model
    current = ModelAlias.objects.select_for_update().filter(registered_model=model, name=alias).first()
    if current is not None and current.version_id == version.pk:
        return current
    ModelAliasMove.objects.create(
        registered_model=model,
        alias=alias,
        from_version=current.version if current else None,
        to_version=version,
        moved_by=moved_by,
    )
    if current is None:
        return ModelAlias.objects.create(registered_model=model, name=alias, version=version)
    current.version = version
    current.save(update_fields=["version", "updated_at"])
    return current


def model_version_verify(*, version: ModelVersion, mark_failed: bool = False) -> None:
    """Raise ChecksumMismatch naming every changed, missing or extra file; optionally mark the version failed."""
    problems = artifacts.verify_checksums(version.path, version.checksums)
    if problems:
        if mark_failed:
            ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED)
            version.status = ModelVersion.Status.FAILED
        raise ChecksumMismatch(f"{version} failed verification: " + "; ".join(problems))


def registered_model_delete(*, registered_model: RegisteredModel) -> None:
    """Delete a model with its versions; its folder leaves the disk once the transaction commits."""
    folder = _root() / registered_model.folder
    try:
        with transaction.atomic():
            registered_model.delete()
    except (ProtectedError, RestrictedError) as exc:
        raise Conflict(f"{registered_model} cannot be deleted: other models derive from it.") from exc
    transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def staging_cleanup(*, older_than_s: float = 3600.0) -> list[Path]:
    """Remove staging folders left by registrations that died (a live one is younger than `older_than_s`)."""
    removed = []
    cutoff = time.time() - older_than_s
    for staging in _root().glob(f"*/{STAGING_PREFIX}*"):
        if staging.is_dir() and staging.stat().st_mtime < cutoff:
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
    return removed


def registered_model_delete_owned(*, registered_model: RegisteredModel, user) -> None:
    """A user deletes one of their models; refused (Conflict) while a deletion guard gives a reason."""
    registered_model_require_owner(registered_model=registered_model, user=user)
    for guard in deletion_guards:
        reason = guard(registered_model)
        if reason:
            raise Conflict(reason)
    registered_model_delete(registered_model=registered_model)

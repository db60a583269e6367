"""Merged weights of an adapter version: built once, in a Celery task, kept beside the version.

A request for them (`merged_weights_request`) finds them ready, or asks for a build and answers at once: the
web tier never loads torch. The build (`merged_weights_build`, task `BUILD_MERGED_WEIGHTS` on the default queue)
merges in a child process (`apps/registry/merge_child.py`), seals the result like a version (model card,
SHA256SUMS, read-only files) in a hidden staging folder, and renames it to `<model folder>/merged/<number>/` in
the transaction that marks its row ready. The version's own folder never changes.

Once, under concurrent requests: the row is created once (a unique version), and every later "ask again" (the
last build failed a while ago, its message was lost, its worker died, its folder went missing) is one
conditional UPDATE on the row's `requested_at`, so exactly one request enqueues. A duplicate delivery of the
task is harmless too: a build starts only by taking the row (`started_at` empty → now).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core.errors import InvalidRequest
from apps.registry import artifacts
from apps.registry.models import MergedWeights, ModelVersion
from apps.registry.selectors import model_version_weights_chain
from apps.registry.services import STAGING_PREFIX

logger = logging.getLogger(__name__)

# The task's name: this module sends it by name and never imports tasks.py (which imports this module).
BUILD_MERGED_WEIGHTS = "apps.registry.tasks.merged_weights_build"
MERGE_TIMEOUT_S = 30 * 60  # the child is killed after this: a 135M model merges in well under a minute on a CPU
# A build nobody took this long after it was asked for: its queue message is lost (a worker died holding it).
LOST_IN_QUEUE_AFTER = timedelta(minutes=15)
# A build taken this long ago and not finished: its worker died (the child is killed at MERGE_TIMEOUT_S).
DIED_AFTER = timedelta(seconds=MERGE_TIMEOUT_S) + timedelta(minutes=5)
# A failed build is tried again when asked for after this: not at every click, nor never again.
RETRY_FAILED_AFTER = timedelta(minutes=10)


class MergeFailed(Exception):
    pass


def merged_weights_of(*, version: ModelVersion) -> MergedWeights | None:
    """The version's merged weights row, if they were ever asked for (for the version page)."""
    return MergedWeights.objects.filter(version=version).first()


def merged_weights_request(*, version: ModelVersion) -> MergedWeights:
    """The merged weights of an adapter version: ready to stream, or being prepared (a build is enqueued when
    none is under way), or failed a short while ago. InvalidRequest for a version that is not an adapter."""
    if version.kind != ModelVersion.Kind.LORA or version.base_version is None:
        raise InvalidRequest("Only a LoRA adapter has merged weights to download.")
    now = timezone.now()
    merged, created = MergedWeights.objects.get_or_create(
        version=version, defaults={"status": MergedWeights.Status.BUILDING, "requested_at": now}
    )
    merged.version = version
    if created:
        _enqueue(merged)
    elif _needs_another_build(merged, now) and _ask_again(merged, now):
        _enqueue(merged)
        merged.refresh_from_db()
    return merged


def _needs_another_build(merged: MergedWeights, now) -> bool:
    status = MergedWeights.Status
    if merged.status == status.READY:
        return not (merged.path / artifacts.CHECKSUMS_FILE).is_file()  # the folder went missing
    if merged.status == status.FAILED:
        return merged.finished_at is None or merged.finished_at <= now - RETRY_FAILED_AFTER
    if merged.started_at is None:
        return merged.requested_at <= now - LOST_IN_QUEUE_AFTER
    return merged.started_at <= now - DIED_AFTER


def _ask_again(merged: MergedWeights, now) -> bool:
    """Put the row back to `building`, if no other request did since we read it (True: ours to enqueue)."""
    return bool(
        MergedWeights.objects.filter(pk=merged.pk, status=merged.status, requested_at=merged.requested_at).update(
            status=MergedWeights.Status.BUILDING, requested_at=now, started_at=None, finished_at=None, error="",
            checksums={}, size_bytes=0, updated_at=now,
        )
    )


def _enqueue(merged: MergedWeights) -> None:
    # Sent once the row is committed: the worker must find it, and a rolled-back request sends nothing.
    transaction.on_commit(lambda: current_app.send_task(BUILD_MERGED_WEIGHTS, args=[merged.pk]))


def merged_weights_build(*, merged_id: int) -> None:
    """Build the merged weights the row asks for, if no one else is building them. A failure marks the row
    failed (its reason kept for staff) and leaves no file behind."""
    started = timezone.now()
    taken = MergedWeights.objects.filter(
        pk=merged_id, status=MergedWeights.Status.BUILDING, started_at__isnull=True
    ).update(started_at=started, updated_at=started)
    if not taken:
        return  # built, failed, or taken by another delivery of the same message
    merged = MergedWeights.objects.select_related(
        "version__registered_model", "version__base_version__registered_model"
    ).get(pk=merged_id)
    staging = merged.path.parent.parent / f"{STAGING_PREFIX}merged-{uuid.uuid4().hex}"
    try:
        # A fine-tune of a LoRA fine-tune: its parents' adapters are merged onto the root first, in order.
        root, adapters = model_version_weights_chain(version=merged.version)
        parents = {"parents": [a.path for a in adapters[:-1]]} if len(adapters) > 1 else {}
        merge_in_child(root.path, merged.version.path, staging, **parents)
        checksums = _seal(staging, version=merged.version)
        _put_in_place(merged, staging, started=started, checksums=checksums)
    except Exception as exc:  # noqa: BLE001 - whatever went wrong, the row says so and nothing is left behind
        logger.exception("merged weights of %s: the build failed", merged.version)
        now = timezone.now()
        MergedWeights.objects.filter(pk=merged_id, status=MergedWeights.Status.BUILDING, started_at=started).update(
            status=MergedWeights.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:4000], finished_at=now,
            updated_at=now,
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def merge_in_child(base: Path, adapter: Path, out: Path, *, parents: list[Path] = ()) -> None:
    """Merge in a child process (no torch in this one); MergeFailed with the end of its stderr when it fails.
    `parents`: adapters merged onto `base` before `adapter` (the chain of a fine-tune of a LoRA fine-tune)."""
    command = [sys.executable, "-m", "apps.registry.merge_child", str(base), str(adapter), str(out),
               str(settings.TORCH_NUM_THREADS), *map(str, parents)]
    try:
        done = subprocess.run(command, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=MERGE_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise MergeFailed(f"the merge took longer than {MERGE_TIMEOUT_S} s and was stopped") from exc
    if done.returncode != 0:
        raise MergeFailed(f"the merge exited with status {done.returncode}: {done.stderr[-2000:]}")


def _seal(staging: Path, *, version: ModelVersion) -> dict[str, str]:
    """A model card, checksums and read-only files, as a version has (SHA256SUMS lets users check them)."""
    base = version.base_version
    card = artifacts.render_model_card(
        model_id=f"{version.reference} (merged)",
        base_model=base.registered_model.name,
        kind=ModelVersion.Kind.FULL,
        description=f"The LoRA adapter {version.reference} merged into {base.reference}: full weights that load "
                    "without PEFT.",
        source={"adapter": version.reference, "base": base.reference},
    )
    (staging / artifacts.CARD_FILE).write_text(card, encoding="utf-8")
    checksums = artifacts.compute_checksums(staging)
    artifacts.write_checksums(staging, checksums)
    artifacts.make_read_only(staging)
    return checksums


def _put_in_place(merged: MergedWeights, staging: Path, *, started, checksums: dict[str, str]) -> None:
    """Rename the sealed folder into place and mark the row ready, in one transaction; nothing happens if the
    row was asked for again meanwhile (this build was presumed dead: the newer one puts its own in place)."""
    final = merged.path
    with transaction.atomic():
        row = MergedWeights.objects.select_for_update().filter(
            pk=merged.pk, status=MergedWeights.Status.BUILDING, started_at=started
        ).first()
        if row is None:
            return
        if final.exists():  # left by a build whose commit failed: no ready row names it
            shutil.rmtree(final)
        final.parent.mkdir(parents=True, exist_ok=True)
        size = artifacts.folder_size(staging)
        os.rename(staging, final)
        now = timezone.now()
        MergedWeights.objects.filter(pk=row.pk).update(
            status=MergedWeights.Status.READY, checksums=checksums, size_bytes=size, finished_at=now, error="",
            updated_at=now,
        )

"""The job lease: exactly one runner per job, taken and kept with conditional UPDATEs (no lock held).

A runner takes the lease (owner token + expiry) with one UPDATE that only a free or expired lease matches, and
renews it while it works. Every move the runner makes on the job row is conditional on its token too, so a job
that was cancelled, or taken over by another runner, is never written back by this one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.db.models import Q
from django.utils import timezone

from apps.tuning.models import FineTuningJob
from apps.tuning.services.jobs import finetune_job_finish

logger = logging.getLogger(__name__)

# A database that restarts, fails over or is locked for a moment: worth trying again, while the lease (minutes by
# default) keeps the job from any other runner. The waits add up to under 4 s, well inside any lease.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
RENEW_RETRY_DELAYS = (0.25, 0.5, 1.0, 2.0)


def lease_acquire(*, job_id: int, token: str) -> bool:
    """Take the job's lease if nobody holds a live one. One conditional UPDATE: two workers cannot both win."""
    now = timezone.now()
    won = FineTuningJob.objects.filter(pk=job_id, status__in=FineTuningJob.ACTIVE).filter(
        Q(lease_owner="") | Q(lease_expires_at__lt=now)
    ).update(lease_owner=token, lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), heartbeat_at=now)
    return won == 1


def lease_renew(*, job_id: int, token: str) -> bool:
    """Extend the lease; False when it is no longer this runner's. A transient database error is tried again a few
    times with backoff before it is raised."""
    for delay in (*RENEW_RETRY_DELAYS, None):
        try:
            now = timezone.now()
            return FineTuningJob.objects.filter(pk=job_id, lease_owner=token).update(
                lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), heartbeat_at=now
            ) == 1
        except TRANSIENT_DB_ERRORS as exc:
            if delay is None:
                raise
            logger.warning("job %s: renewing the lease failed (%s); trying again in %s s", job_id, exc, delay)
            if not connection.in_atomic_block:
                connection.close()  # a broken connection is opened afresh by the next query
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextmanager
def lease_kept(*, job_id: int, token: str) -> Iterator[threading.Event]:
    """Renew the lease from a thread while the runner works outside the trainer (validating the job's files,
    registering its result), so that no transaction has to stay open meanwhile. Yields an event set if the lease
    was lost (or could not be renewed)."""
    stop, lost = threading.Event(), threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(max(0.5, settings.FINETUNE_LEASE_SECONDS / 4)):
                if not lease_renew(job_id=job_id, token=token):
                    lost.set()
                    return
        except TRANSIENT_DB_ERRORS:
            logger.exception("job %s: the lease could not be renewed", job_id)
            lost.set()
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join()


def job_move(*, job_id: int, token: str, expected: tuple[str, ...], **fields) -> bool:
    """Move the job's row (status and other fields) only while this runner holds its lease and the job is in one of
    the `expected` states. False: it was cancelled, or another runner has it now; the caller stops."""
    return FineTuningJob.objects.filter(pk=job_id, lease_owner=token, status__in=expected).update(
        updated_at=timezone.now(), **fields
    ) == 1


def job_finish_held(*, job_id: int, token: str, status: str, message: str, code: str = "", level: str = "info") -> bool:
    """Finish the job if this runner still holds its lease (in a short transaction on the locked row)."""
    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().get(pk=job_id)
        if job.lease_owner != token or job.is_finished:
            return False
        finetune_job_finish(job=job, status=status, message=message, code=code, level=level)
        return True

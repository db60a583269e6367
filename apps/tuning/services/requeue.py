"""Beat's watch over jobs that nobody runs: a runner that died (its lease ran out), and a message that no runner
ever took (a worker fetched it and died before taking the lease: the filesystem broker deletes a message when it is
fetched, so `acks_late` gives nothing back there).

Sending a job again is safe: a second message finds the lease taken (or the job finished) and does nothing.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core.models import WorkerHeartbeat
from apps.tuning.models import FineTuningJob
from apps.tuning.services.jobs import (
    finetune_job_dispatch,
    finetune_job_finish,
    finetune_jobs_start_waiting,
    job_event_create,
)
from apps.tuning.services.limits import duration_text


def requeue_stale_jobs() -> list[str]:
    """Beat: re-queue the jobs whose runner died, send again the ones whose message was lost, start (or fail) the
    ones waiting for files whose check ended (or was lost) unnoticed. Their ids."""
    return _expired_leases_requeue() + _lost_messages_resend() + finetune_jobs_start_waiting()


def _expired_leases_requeue() -> list[str]:
    """A job whose lease ran out lost its worker: re-queue it (it resumes from its checkpoint) or fail it."""
    requeued = []
    stale = FineTuningJob.objects.filter(status__in=FineTuningJob.ACTIVE, lease_expires_at__lt=timezone.now()).exclude(lease_owner="")
    for job in stale:
        with transaction.atomic():
            job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
            if not job.lease_owner or job.lease_expires_at >= timezone.now():
                continue
            if job.attempts >= settings.FINETUNE_MAX_ATTEMPTS:
                finetune_job_finish(job=job, status=FineTuningJob.Status.FAILED, code="worker_lost", level="error",
                                    message=f"The worker running this job stopped {job.attempts} times; the job failed.")
                continue
            job.lease_owner, job.lease_expires_at = "", None
            job.save(update_fields=["lease_owner", "lease_expires_at", "updated_at"])
            job_event_create(job=job, level="warn",
                             message=f"The worker stopped answering; the job goes back to the queue and resumes from step {job.last_checkpoint_step}.")
            finetune_job_dispatch(job=job)
            requeued.append(job.public_id)
    return requeued


def _gpu_queue_idle_since(cutoff) -> bool:
    """No runner has worked on any job since `cutoff`, and a worker consuming the gpu queue has been alive all that
    time: a message waiting in the queue since before then would have been taken. (While a runner trains, the
    waiting jobs may simply be in line behind it; with no live worker, their messages wait in the broker.)"""
    if FineTuningJob.objects.filter(heartbeat_at__gte=cutoff).exists():
        return False
    fresh = timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_AFTER)
    workers = WorkerHeartbeat.objects.filter(last_seen__gte=fresh, started_at__lte=cutoff)
    return any(settings.GPU_QUEUE in worker.queues for worker in workers)


def _lost_messages_resend() -> list[str]:
    """A job waiting with no runner, sent before the gpu queue went idle FINETUNE_DISPATCH_TIMEOUT ago, lost its
    message: send it again, or fail it once FINETUNE_MAX_ATTEMPTS of its messages were lost."""
    timeout = settings.FINETUNE_DISPATCH_TIMEOUT
    cutoff = timezone.now() - timedelta(seconds=timeout)
    if not _gpu_queue_idle_since(cutoff):
        return []
    resent = []
    waiting = FineTuningJob.objects.filter(status__in=FineTuningJob.ACTIVE, lease_owner="").filter(
        Q(dispatched_at__lt=cutoff) | Q(dispatched_at__isnull=True, updated_at__lt=cutoff)  # null: sent before the field existed
    ).exclude(status=FineTuningJob.Status.VALIDATING_FILES, dispatched_at__isnull=True)  # waiting for its files: never sent
    for job in waiting:
        with transaction.atomic():
            job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
            if job.lease_owner or job.is_finished or (job.dispatched_at and job.dispatched_at >= cutoff):
                continue
            job.lost_messages += 1
            if job.lost_messages >= settings.FINETUNE_MAX_ATTEMPTS:
                finetune_job_finish(
                    job=job, status=FineTuningJob.Status.FAILED, code="queue_message_lost", level="error",
                    message=f"No worker took this job from the queue: its message was lost {job.lost_messages} times (a "
                            "worker stopped after fetching it). The job failed; start it again, and tell the store's staff "
                            "if this happens again.",
                )
                continue
            job.save(update_fields=["lost_messages", "updated_at"])
            job_event_create(job=job, level="warn",
                             message=f"No worker took the job from the queue within {duration_text(timeout)}: its message "
                                     "was lost, so it was sent again.")
            finetune_job_dispatch(job=job)
            resent.append(job.public_id)
    return resent

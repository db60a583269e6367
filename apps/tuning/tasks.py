"""Celery entry points for customization: they take ids, call one service, and own failure handling.

Like a view, a task imports the services; the services send these tasks by name (`apps.tuning.dispatch`) and
never import this module, so there is no cycle.
"""

import logging

from celery import shared_task

from apps.tuning import dispatch, services

logger = logging.getLogger(__name__)


@shared_task(name=dispatch.VALIDATE_TRAINING_FILE)
def validate_training_file(file_id: int) -> None:
    """Check the file, then start the jobs that were waiting for it (or fail them if it ended in `error`)."""
    services.finetune_jobs_start_waiting(training_file=services.training_file_validate(file_id=file_id))


@shared_task(name=dispatch.RUN_FINETUNE_JOB, acks_late=True)
def run_finetune_job(job_id: int) -> None:
    """On the gpu queue (worker-gpu, concurrency 1). The job's lease makes a duplicate delivery harmless."""
    try:
        services.finetune_job_run(job_id=job_id)
    except Exception:
        logger.exception("fine-tuning job %s: the runner failed", job_id)
        services.finetune_job_fail_internal(job_id=job_id)


@shared_task(name=dispatch.REQUEUE_STALE_JOBS)
def requeue_stale_jobs() -> list[str]:
    return services.requeue_stale_jobs()

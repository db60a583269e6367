"""Sending customization's Celery tasks: by name, once the transaction that wrote the row commits.

Imports point one way: `tasks.py` is an entry point (it takes ids, loads the row, calls one service), so it
imports the services, like a view does; the services that enqueue work never import `tasks.py` back, or the
two modules would form a cycle. They send the task by its name instead: Celery routes by name
(CELERY_TASK_ROUTES puts RUN_FINETUNE_JOB on the gpu queue), so nothing is lost, and `tasks.py` registers each
task under the same constant.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction

VALIDATE_TRAINING_FILE = "apps.tuning.tasks.validate_training_file"
RUN_FINETUNE_JOB = "apps.tuning.tasks.run_finetune_job"
REQUEUE_STALE_JOBS = "apps.tuning.tasks.requeue_stale_jobs"


def _send_on_commit(name: str, *args) -> None:
    # Sent only once the row is committed: the worker must find it, and a rolled-back write sends nothing.
    transaction.on_commit(lambda: current_app.send_task(name, args=args))


def training_file_validation_enqueue(*, file_id: int) -> None:
    _send_on_commit(VALIDATE_TRAINING_FILE, file_id)


def finetune_job_enqueue(*, job_id: int) -> None:
    _send_on_commit(RUN_FINETUNE_JOB, job_id)

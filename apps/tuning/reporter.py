"""The trainer's reporter inside a job's child process: each step, checkpoint and stop check goes to the job's rows.

Every write is conditional on the lease token: a child whose lease went to another runner writes nothing and
stops at the end of its step (never two runners on one job).
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.tuning.models import FineTuningJob, JobCheckpoint, JobEvent, JobMetric


class JobReporter:
    def __init__(self, job_id: int, token: str):
        self.job_id, self.token = job_id, token

    def _job(self):
        return FineTuningJob.objects.filter(pk=self.job_id, lease_owner=self.token)

    def on_start(self, *, total_steps, resumed_from_step):
        self._job().update(total_steps=total_steps, step=resumed_from_step)

    def on_step(self, *, step, total_steps, metrics):
        if step == 0 and "eval_loss" in metrics:  # the base model's validation loss, before any training
            self._job().update(val_loss_before=metrics["eval_loss"])
            return
        JobMetric.objects.create(
            job_id=self.job_id, step=step, train_loss=metrics.get("loss"), val_loss=metrics.get("eval_loss"),
            learning_rate=metrics.get("learning_rate"), tokens_per_second=metrics.get("tokens_per_second"),
        )
        now = timezone.now()
        self._job().update(
            step=step, total_steps=total_steps, heartbeat_at=now,
            lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), updated_at=now,
        )

    def on_checkpoint(self, *, step, path):
        with transaction.atomic():
            if not self._job().update(last_checkpoint_step=step):
                return
            # The losses logged at this step (training, then validation when the job has a validation file).
            at_step = JobMetric.objects.filter(job_id=self.job_id, step=step).order_by("id")
            train = at_step.filter(train_loss__isnull=False).last()
            valid = at_step.filter(val_loss__isnull=False).last()
            metrics = {"train_loss": train.train_loss if train else None}
            if valid is not None:
                metrics["valid_loss"] = valid.val_loss
            JobCheckpoint.objects.update_or_create(job_id=self.job_id, step=step, defaults={"metrics": metrics})
            JobEvent.objects.create(job_id=self.job_id, message=f"Checkpoint saved at step {step}.", data={"step": step})

    def should_stop(self) -> bool:
        return not self._job().filter(cancel_requested=False).exists()

"""The trainer's reporter inside a job's child process: each step, checkpoint and stop check goes to the job's rows.

Every write is conditional on the lease token: a child whose lease went to another runner writes nothing and
stops at the end of its step (never two runners on one job). It also keeps the job's training time, over all its
attempts, and stops at the end of the step that reaches FINETUNE_MAX_WALL_SECONDS (the runner then fails the job).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.tuning.models import FineTuningJob, JobCheckpoint, JobEvent, JobMetric
from apps.tuning.trainer.data import classifier_metrics


class JobReporter:
    def __init__(self, job_id: int, token: str):
        self.job_id, self.token = job_id, token
        # The attempt's clock starts with the child (loading the model and the data count too).
        self.started = time.monotonic()
        self.seconds_before = FineTuningJob.objects.filter(pk=job_id).values_list("training_seconds", flat=True).first() or 0.0

    def _job(self):
        return FineTuningJob.objects.filter(pk=self.job_id, lease_owner=self.token)

    def training_seconds(self) -> float:
        """This job's training time: its earlier attempts' and this one's so far."""
        return self.seconds_before + time.monotonic() - self.started

    def on_start(self, *, total_steps, resumed_from_step):
        self._job().update(total_steps=total_steps, step=resumed_from_step)

    def on_step(self, *, step, total_steps, metrics):
        if "eval_perplexity" in metrics:  # the held-out perplexity of each evaluation, in the job's events
            JobEvent.objects.create(job_id=self.job_id, message=f"Held-out perplexity at step {step}: {metrics['eval_perplexity']:,.2f}.",
                                    data={"step": step, "perplexity": metrics["eval_perplexity"], "eval_loss": metrics.get("eval_loss")})
        if step == 0 and "eval_loss" in metrics:  # the base model's validation loss, before any training
            self._job().update(val_loss_before=metrics["eval_loss"])
            return
        JobMetric.objects.create(
            job_id=self.job_id, step=step, train_loss=metrics.get("loss"), val_loss=metrics.get("eval_loss"),
            learning_rate=metrics.get("learning_rate"), tokens_per_second=metrics.get("tokens_per_second"),
        )
        evaluation = classifier_metrics(metrics)
        if evaluation:  # a classifier's accuracy and each label's F1 on the validation split, for the job page
            f1 = ", ".join(f"{label} {value:.2f}" for label, value in evaluation["valid_f1"].items())
            JobEvent.objects.create(job_id=self.job_id, data={"step": step, **evaluation},
                                    message=f"Validation at step {step}: accuracy {evaluation['valid_accuracy']:.1%}, "
                                            f"F1 per label: {f1}.")
        now = timezone.now()
        self._job().update(
            step=step, total_steps=total_steps, heartbeat_at=now, training_seconds=self.training_seconds(),
            lease_expires_at=now + timedelta(seconds=settings.FINETUNE_LEASE_SECONDS), updated_at=now,
        )

    def on_checkpoint(self, *, step, path):
        with transaction.atomic():
            if not self._job().update(last_checkpoint_step=step):
                return
            JobEvent.objects.create(job_id=self.job_id, message=f"Checkpoint saved at step {step}.", data={"step": step})

    def on_kept_checkpoint(self, *, step, epoch, metrics, kept_steps):
        """An epoch's model is kept (with OpenAI's metrics at its step); rows of epochs no longer kept go."""
        with transaction.atomic():
            if not self._job().select_for_update().exists():  # not its lease (any more): nothing written
                return
            JobCheckpoint.objects.update_or_create(job_id=self.job_id, step=step, defaults={"epoch": epoch, "metrics": metrics})
            JobCheckpoint.objects.filter(job_id=self.job_id, model_version__isnull=True).exclude(step__in=kept_steps).delete()
            JobEvent.objects.create(job_id=self.job_id, message=f"Kept the model of epoch {epoch} (step {step}).",
                                    data={"step": step, "epoch": epoch, **metrics})

    def should_stop(self) -> bool:
        if self.training_seconds() >= settings.FINETUNE_MAX_WALL_SECONDS:
            self._job().update(training_seconds=self.training_seconds())  # what the runner reads to fail the job
            return True
        return not self._job().filter(cancel_requested=False).exists()

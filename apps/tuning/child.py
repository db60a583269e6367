"""The training process of one job attempt: `python -m apps.tuning.child JOB_ID LEASE_TOKEN CONFIG RESULT`.

Started by the Celery task (its supervisor) with a parent-death signal, so it dies with the worker. It reports
each step to the job's row (metrics, progress, heartbeat) and stops at the end of a step when the job is
cancelled or its lease is no longer its own (never two runners on one job).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from datetime import timedelta


class JobReporter:
    def __init__(self, job_id: int, token: str):
        self.job_id, self.token = job_id, token

    def _job(self):
        from apps.tuning.models import FineTuningJob

        return FineTuningJob.objects.filter(pk=self.job_id, lease_owner=self.token)

    def on_start(self, *, total_steps, resumed_from_step):
        self._job().update(total_steps=total_steps, step=resumed_from_step)

    def on_step(self, *, step, total_steps, metrics):
        from django.conf import settings
        from django.utils import timezone

        from apps.tuning.models import JobMetric

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
        from apps.tuning.models import JobEvent

        if self._job().update(last_checkpoint_step=step):
            JobEvent.objects.create(job_id=self.job_id, message=f"Checkpoint saved at step {step}.", data={"step": step})

    def should_stop(self) -> bool:
        return not self._job().filter(cancel_requested=False).exists()


def main() -> None:
    job_id, token, config_path, result_path = sys.argv[1:5]
    if os.getppid() == 1:
        sys.exit("the supervising worker is gone")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
    import django

    django.setup()
    from django.conf import settings

    if settings.TORCH_NUM_THREADS:
        import torch

        torch.set_num_threads(settings.TORCH_NUM_THREADS)
    from apps.tuning.trainer.train import TrainConfig, run_training

    with open(config_path) as fh:
        config = TrainConfig(**json.load(fh))
    result = run_training(config, JobReporter(int(job_id), token))
    payload = asdict(result)
    payload.pop("history")
    with open(result_path + ".tmp", "w") as fh:
        json.dump(payload, fh)
    os.replace(result_path + ".tmp", result_path)


if __name__ == "__main__":
    main()

"""The training process of one job attempt: `python -m apps.tuning.child JOB_ID LEASE_TOKEN CONFIG RESULT`.

Started by the Celery task (its supervisor) with a parent-death signal, so it dies with the worker. It reports
each step to the job's row (metrics, progress, heartbeat) through `apps.tuning.reporter.JobReporter`, and stops
at the end of a step when the job is cancelled or its lease is no longer its own (never two runners on one job).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict

import django
import torch
from django.conf import settings

from apps.tuning.trainer.train import TrainConfig, run_training


def main() -> None:
    job_id, token, config_path, result_path = sys.argv[1:5]
    # The worker may have died before the parent-death signal was set: then this process has a new parent (init,
    # or a subreaper such as `make run`'s supervisor), not the worker that started it.
    if os.getppid() != int(os.environ.get("TRAINER_PARENT_PID", os.getppid())):
        sys.exit("the supervising worker is gone")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
    django.setup()
    # Not a cycle: models can be imported only once django.setup() has run, in this process.
    from apps.tuning.reporter import JobReporter

    if settings.TORCH_NUM_THREADS:
        torch.set_num_threads(settings.TORCH_NUM_THREADS)
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

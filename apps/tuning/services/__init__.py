"""Writes for customization, one module per part: training files (`files`), the limits a job is held to
(`limits`), fine-tuning jobs (`jobs`), the job lease (`lease`), running a job on the gpu queue (`runner`) and beat's
watch over jobs nobody runs (`requeue`). Each module imports only those before it (files ← limits ← jobs ← lease ←
runner, lease ← requeue), and none imports `apps.tuning.tasks` (see `apps.tuning.dispatch`).

The package's public functions are importable from here too (`from apps.tuning import services`), so a caller
names the app's services without knowing how they are split.
"""

from apps.tuning.services.files import (
    FileTooLarge,
    QuotaExceeded,
    base_version_resolve,
    training_file_create,
    training_file_delete,
    training_file_validate,
)
from apps.tuning.services.jobs import (
    finetune_job_cancel,
    finetune_job_create,
    finetune_job_dispatch,
    finetune_job_estimate,
    finetune_job_finish,
    finetune_job_model_id,
    finetune_job_notices_clear,
    finetune_job_start_waiting,
    finetune_jobs_start_waiting,
    job_event_create,
    metadata_check,
    training_file_error,
)
from apps.tuning.services.lease import lease_acquire, lease_renew
from apps.tuning.services.limits import TrainingBudgetExceeded, training_limits
from apps.tuning.services.requeue import requeue_stale_jobs
from apps.tuning.services.runner import finetune_job_fail_internal, finetune_job_run

__all__ = [
    "FileTooLarge", "QuotaExceeded", "base_version_resolve", "training_file_create", "training_file_delete", "training_file_validate",
    "finetune_job_cancel", "finetune_job_create", "finetune_job_dispatch", "finetune_job_estimate", "finetune_job_finish",
    "finetune_job_model_id", "finetune_job_notices_clear", "finetune_job_start_waiting", "finetune_jobs_start_waiting",
    "job_event_create", "metadata_check", "training_file_error",
    "lease_acquire", "lease_renew", "TrainingBudgetExceeded", "training_limits", "requeue_stale_jobs",
    "finetune_job_fail_internal", "finetune_job_run",
]

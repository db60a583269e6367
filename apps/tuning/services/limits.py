"""Bounded training: a cap per job and a budget per user, checked before a job is queued.

A job trains on at most FINETUNE_MAX_TRAINING_TOKENS (the file's tokens x epochs); a user on at most
FINETUNE_DAILY_TOKENS_PER_USER over any 24 hours. A job counts on the day it is created, for its estimated tokens;
a cancelled or failed one only for the share of its steps that ran. The wall-clock cap (FINETUNE_MAX_WALL_SECONDS)
is enforced while the job trains (the child's reporter stops it after the current step); its figure is shown here
with the others, on the customize page's estimate and in the job-create error of every face.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.core.errors import InvalidRequest
from apps.tuning.models import FineTuningJob
from apps.tuning.services.files import QuotaExceeded

WINDOW = timedelta(hours=24)


class TrainingBudgetExceeded(QuotaExceeded):
    code = "training_budget_exceeded"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


def _charged_tokens(job: FineTuningJob) -> int:
    tokens = int((job.estimate or {}).get("tokens", 0))
    if job.status in (FineTuningJob.Status.FAILED, FineTuningJob.Status.CANCELLED):
        return tokens * job.step // job.total_steps if job.total_steps else 0
    return tokens


def _window_jobs(user, now: datetime) -> list[tuple[datetime, int]]:
    jobs = FineTuningJob.objects.filter(owner=user, created_at__gte=now - WINDOW).order_by("created_at")
    return [(job.created_at, _charged_tokens(job)) for job in jobs.only("created_at", "estimate", "status", "step", "total_steps")]


def training_limits(*, user) -> dict:
    """The figures a job is held to, and what the user has left of the day's budget."""
    used = sum(tokens for _, tokens in _window_jobs(user, timezone.now()))
    daily = settings.FINETUNE_DAILY_TOKENS_PER_USER
    return {
        "max_job_tokens": settings.FINETUNE_MAX_TRAINING_TOKENS, "max_wall_seconds": settings.FINETUNE_MAX_WALL_SECONDS,
        "daily_tokens": daily, "daily_tokens_used": used, "daily_tokens_left": max(0, daily - used),
    }


def duration_text(seconds: float) -> str:
    """`3 h 20 min`, `45 min`, `30 s`: a wait or a cap, for people."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    return f"{hours} h {minutes} min" if hours and minutes else f"{hours} h" if hours else f"{minutes} min"


def training_limits_check(*, user, estimate: dict, file_tokens: int, n_epochs: int) -> None:
    training_job_cap_check(estimate=estimate, file_tokens=file_tokens, n_epochs=n_epochs)
    training_budget_check(user=user, tokens=estimate["tokens"])


def training_job_cap_check(*, estimate: dict, file_tokens: int, n_epochs: int) -> None:
    """A job over the per-job cap, or over a whole day's budget, can never run: 400."""
    tokens, cap, daily = estimate["tokens"], settings.FINETUNE_MAX_TRAINING_TOKENS, settings.FINETUNE_DAILY_TOKENS_PER_USER
    if tokens > cap:
        raise InvalidRequest(
            f"This job would train on {tokens:,} tokens ({file_tokens:,} tokens in the file × {n_epochs} epochs); "
            f"the limit is {cap:,} per job. Use fewer epochs or a smaller file.",
            param="hyperparameters.n_epochs", code="training_tokens_exceeded",
        )
    if tokens > daily:
        raise InvalidRequest(
            f"This job would train on {tokens:,} tokens, more than the {daily:,} training tokens a user may use in "
            "24 hours. Use fewer epochs or a smaller file.", param="hyperparameters.n_epochs", code="training_tokens_exceeded",
        )


def training_budget_check(*, user, tokens: int) -> None:
    """Over what is left of the user's budget: 429, with Retry-After (when enough of the last 24 hours' jobs age
    out of the window for this one to fit)."""
    daily, now = settings.FINETUNE_DAILY_TOKENS_PER_USER, timezone.now()
    jobs = _window_jobs(user, now)
    used = sum(charged for _, charged in jobs)
    if used + tokens <= daily:
        return
    over, freed, retry_after = used + tokens - daily, 0, WINDOW.total_seconds()
    for created_at, charged in jobs:  # oldest first
        freed += charged
        if freed >= over:
            retry_after = (created_at + WINDOW - now).total_seconds()
            break
    raise TrainingBudgetExceeded(
        f"This job would train on {tokens:,} tokens; you have {max(0, daily - used):,} of your {daily:,} training tokens "
        f"for 24 hours left (jobs created in the last 24 hours count). Try again in {duration_text(retry_after)}, or "
        "train on fewer tokens (fewer epochs or a smaller file).",
        retry_after=max(1, math.ceil(retry_after)),
    )

"""Reads of runs: a user's usage (the account page and /api/v1/usage), from the AppRun rows the run service writes."""

from datetime import timedelta

from django.db.models import Count, Sum
from django.utils import timezone

from apps.chat.models import AppRun

USAGE_DAYS = 30


def usage_summary(*, user) -> dict:
    runs = AppRun.objects.filter(user=user, created_at__gte=timezone.now() - timedelta(days=USAGE_DAYS))
    totals = runs.aggregate(requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
    by_target = (
        runs.values("app__name", "model").annotate(requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        .order_by("-completion")
    )
    by_key = (
        runs.exclude(api_key=None).values("api_key__name", "api_key__prefix")
        .annotate(requests=Count("id"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens")).order_by("-completion")
    )
    return {"days": USAGE_DAYS, "totals": totals, "by_target": list(by_target), "by_key": list(by_key)}

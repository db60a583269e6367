"""Request and token limits per API key and per user, on counters that hold under concurrent clients.

Each scope has one row per fixed window (a minute). Taking a request is a single conditional UPDATE
(`requests < limit`), so two clients can never both take the last request: the database serializes them.
Tokens are known once a generation ends; they are added then, and a scope over its token budget is refused at its
next request until the window turns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import RateWindow
from apps.core.errors import StoreError


class RateLimited(StoreError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, headers: dict):
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {**headers, "Retry-After": str(retry_after)}


@dataclass
class Quota:
    scope: str
    requests: int
    tokens: int


def _window(now: datetime) -> datetime:
    seconds = settings.RATE_LIMIT_WINDOW_SECONDS
    return datetime.fromtimestamp(now.timestamp() // seconds * seconds, tz=now.tzinfo)


def _counter(scope: str, start: datetime) -> RateWindow:
    try:
        with transaction.atomic():
            return RateWindow.objects.get_or_create(scope=scope, window_start=start)[0]
    except IntegrityError:  # created by a concurrent request between our get and create
        return RateWindow.objects.get(scope=scope, window_start=start)


def quotas_for(*, user, api_key) -> list[Quota]:
    quotas = [Quota(f"user:{user.pk}", settings.RATE_LIMIT_USER_REQUESTS, settings.RATE_LIMIT_USER_TOKENS)]
    if api_key is not None:
        quotas.insert(0, Quota(f"key:{api_key.pk}", settings.RATE_LIMIT_KEY_REQUESTS, settings.RATE_LIMIT_KEY_TOKENS))
    return quotas


def request_take(*, quotas: list[Quota]) -> dict:
    """Count one request against every quota, or refuse it (RateLimited) without counting it anywhere."""
    now = timezone.now()
    start = _window(now)
    reset = int((start + timedelta(seconds=settings.RATE_LIMIT_WINDOW_SECONDS) - now).total_seconds()) + 1
    headers = {}
    with transaction.atomic():
        for quota in quotas:
            counter = _counter(quota.scope, start)
            won = RateWindow.objects.filter(pk=counter.pk, requests__lt=quota.requests, tokens__lt=quota.tokens).update(
                requests=F("requests") + 1
            )
            counter.refresh_from_db()
            headers = headers or {
                "x-ratelimit-limit-requests": str(quota.requests),
                "x-ratelimit-remaining-requests": str(max(quota.requests - counter.requests, 0)),
                "x-ratelimit-reset-requests": f"{reset}s",
                "x-ratelimit-limit-tokens": str(quota.tokens),
                "x-ratelimit-remaining-tokens": str(max(quota.tokens - counter.tokens, 0)),
                "x-ratelimit-reset-tokens": f"{reset}s",
            }
            if not won:  # raising rolls the block back: the quotas already taken give their request back
                what = "requests" if counter.requests >= quota.requests else "tokens"
                kind = "API key" if quota.scope.startswith("key:") else "account"
                raise RateLimited(
                    f"Rate limit reached for this {kind}: {getattr(quota, what)} {what} per {settings.RATE_LIMIT_WINDOW_SECONDS} s. "
                    f"Try again in {reset} s.",
                    retry_after=reset, headers=headers,
                )
    return headers


def tokens_add(*, quotas: list[Quota], tokens: int) -> None:
    start = _window(timezone.now())
    for quota in quotas:
        RateWindow.objects.filter(scope=quota.scope, window_start=start).update(tokens=F("tokens") + tokens)

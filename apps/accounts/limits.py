"""Request and token limits per API key, per user and per anonymous address, on counters that hold under
concurrent clients.

Each scope has one row per fixed window (a minute for keys and users, an hour for anonymous trials). Taking a request is a single conditional UPDATE
(`requests < limit`), so two clients can never both take the last request: the database serializes them.
Tokens are known once a generation ends; they are added then, and a scope over its token budget is refused at its
next request until the window turns.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import RateWindow
from apps.core.errors import StoreError


class RateLimited(StoreError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: int, headers: dict, scope: str = ""):
        super().__init__(message)
        self.scope = scope  # the quota that refused
        self.retry_after = retry_after
        self.headers = {**headers, "Retry-After": str(retry_after)}


@dataclass
class Quota:
    scope: str
    requests: int
    tokens: int
    window: int = 0  # seconds; 0: settings.RATE_LIMIT_WINDOW_SECONDS

    @property
    def seconds(self) -> int:
        return self.window or settings.RATE_LIMIT_WINDOW_SECONDS


def _window(now: datetime, seconds: int) -> datetime:
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


def client_address(meta: dict) -> str:
    """The client's IP address. Behind a reverse proxy named in TRUSTED_PROXIES, the right-most address of
    X-Forwarded-For that is not a trusted proxy (the ones left of it are whatever the client chose to send);
    otherwise the connection's own address, so that a forged header changes nothing."""
    remote = meta.get("REMOTE_ADDR", "") or "unknown"
    if remote not in settings.TRUSTED_PROXIES:
        return remote
    for candidate in reversed([a.strip() for a in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")]):
        try:
            address = str(ipaddress.ip_address(candidate))
        except ValueError:
            break  # a proxy we trust wrote garbage: fall back to the proxy's own address
        if address not in settings.TRUSTED_PROXIES:
            return address
    return remote


def anonymous_quotas(*, address: str) -> list[Quota]:
    """Trials without an account: per client address and for all anonymous visitors together, per hour."""
    return [
        Quota(f"anon:{address}", settings.ANON_TRIAL_RUNS, settings.ANON_TRIAL_TOKENS, window=settings.ANON_TRIAL_WINDOW_SECONDS),
        Quota("anon:*", settings.ANON_TRIAL_GLOBAL_RUNS, settings.ANON_TRIAL_GLOBAL_TOKENS,
              window=settings.ANON_TRIAL_WINDOW_SECONDS),
    ]


def request_take(*, quotas: list[Quota]) -> dict:
    """Count one request against every quota, or refuse it (RateLimited) without counting it anywhere."""
    now = timezone.now()
    headers = {}
    with transaction.atomic():
        for quota in quotas:
            start = _window(now, quota.seconds)
            reset = int((start + timedelta(seconds=quota.seconds) - now).total_seconds()) + 1
            counts = _take(quota, start)
            if counts is None:  # no counter yet in this window (its first request), or over a limit
                counter = _counter(quota.scope, start)
                counts = _take(quota, start)
                if counts is None:  # over a limit: the counts that say which
                    counter.refresh_from_db()
            won = counts is not None
            requests, tokens = counts if won else (counter.requests, counter.tokens)
            headers = headers or {
                "x-ratelimit-limit-requests": str(quota.requests),
                "x-ratelimit-remaining-requests": str(max(quota.requests - requests, 0)),
                "x-ratelimit-reset-requests": f"{reset}s",
                "x-ratelimit-limit-tokens": str(quota.tokens),
                "x-ratelimit-remaining-tokens": str(max(quota.tokens - tokens, 0)),
                "x-ratelimit-reset-tokens": f"{reset}s",
            }
            if not won:  # raising rolls the block back: the quotas already taken give their request back
                what = "requests" if requests >= quota.requests else "tokens"
                kind = "API key" if quota.scope.startswith("key:") else "account"
                raise RateLimited(
                    f"Rate limit reached for this {kind}: {getattr(quota, what)} {what} per {quota.seconds} s. "
                    f"Try again in {reset} s.",
                    retry_after=reset, headers=headers, scope=quota.scope,
                )
    return headers


def _take(quota: Quota, start: datetime) -> tuple[int, int] | None:
    """One request from the window's counter if it is under both limits: the counts after it, or None (no counter,
    or a limit reached). One statement: the UPDATE returns the row it changed (PostgreSQL; SQLite 3.35+)."""
    table = RateWindow._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET requests = requests + 1 WHERE scope = %s AND window_start = %s AND requests < %s "
            f"AND tokens < %s RETURNING requests, tokens",
            [quota.scope, connection.ops.adapt_datetimefield_value(start), quota.requests, quota.tokens],
        )
        row = cursor.fetchone()
    return tuple(row) if row is not None else None


def request_give_back(*, quotas: list[Quota]) -> None:
    """A request taken and then not served (the engine refused it: busy, unavailable) is not counted."""
    now = timezone.now()
    for quota in quotas:
        RateWindow.objects.filter(scope=quota.scope, window_start=_window(now, quota.seconds), requests__gt=0).update(
            requests=F("requests") - 1
        )


def tokens_add(*, quotas: list[Quota], tokens: int) -> None:
    now = timezone.now()
    for quota in quotas:
        RateWindow.objects.filter(scope=quota.scope, window_start=_window(now, quota.seconds)).update(tokens=F("tokens") + tokens)

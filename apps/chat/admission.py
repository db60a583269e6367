"""What a run may do, decided before it starts: the same rules for every face (pages, /api/v1, /v1).

- **quotas**: one request from the caller's per-user and per-key windows, or an anonymous visitor's trials
  (per client address and for all visitors, on server-side counters);
- **bounded work**: `max_tokens` at most the context left after the prompt, `n` x `num_beams` at most
  RUN_MAX_SEQUENCES, and at most RUN_MAX_CONCURRENT_STREAMS streams at once per user, per key and per address;
- **metering**: tokens are billed as they are produced (`Meter`), so a client that leaves before the end is
  still billed for what it was sent, and a long stream trips the token quota.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from apps.accounts.limits import (
    Quota,
    RateLimited,
    anonymous_quotas,
    quotas_for,
    request_give_back,
    request_take,
    tokens_add,
)
from apps.accounts.models import User
from apps.chat.models import StreamSlot
from apps.core.errors import InvalidRequest, StoreError
from apps.inference.types import (
    ContextLengthExceeded,
    GenerationRequest,
    SamplingParams,
)

BILL_EVERY = 16  # tokens: how often a stream adds what it produced to the quotas
HEARTBEAT_EVERY = timedelta(seconds=10)


class TrialLimitReached(StoreError):
    status = 429
    type = "rate_limit_error"
    code = "trial_limit"

    def __init__(self, message: str, *, headers: dict):
        super().__init__(message)
        self.headers = headers


class TooManyStreams(StoreError):
    status = 429
    type = "rate_limit_error"
    code = "too_many_streams"

    def __init__(self, message: str):
        super().__init__(message)
        self.headers = {"Retry-After": "5"}


def quotas_take(*, user, api_key, address: str) -> tuple[list[Quota], dict]:
    """Take one request from the caller's quotas (a 429 when over one): a user's and their key's, or an anonymous
    visitor's trials, counted per address and for all visitors on the server (not in a cookie they can drop)."""
    if user.is_authenticated:
        quotas = quotas_for(user=user, api_key=api_key)
        return quotas, request_take(quotas=quotas)
    quotas = anonymous_quotas(address=address or "unknown")
    try:
        return quotas, request_take(quotas=quotas)
    except RateLimited as exc:
        if exc.scope == "anon:*":
            message = (f"Free tries without an account are used up for now (try again in {exc.retry_after // 60 + 1} min). "
                       "Sign up (it is free) to keep going.")
        else:
            message = f"You have used your {settings.ANON_TRIAL_RUNS} free tries this hour. Sign up (it is free) to keep going."
        raise TrialLimitReached(message, headers=exc.headers) from None


def request_check(request: GenerationRequest, *, n: int) -> SamplingParams:
    """The request's sampling settings, checked (a 400 for a bad one): what can be refused before counting."""
    params = request.params.validate()
    if not 1 <= n <= 8:
        raise InvalidRequest("n must be between 1 and 8.", param="n")
    if n * params.num_beams > settings.RUN_MAX_SEQUENCES:
        raise InvalidRequest(
            f"n x num_beams is {n * params.num_beams}; at most {settings.RUN_MAX_SEQUENCES} sequences per request.",
            param="n" if n > 1 else "num_beams")
    return params


def request_bound(request: GenerationRequest, *, prompt_tokens: int, context: int,
                  caller_max_tokens: bool) -> GenerationRequest:
    """The request (checked by `request_check`) with `max_tokens` set, at most the context left after the prompt; a
    400 for asking more. An app's own default is cut to what is left (`caller_max_tokens=False`); a number the
    caller chose is not."""
    params = request.params
    left = context - prompt_tokens
    if left <= 0:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context} tokens; the prompt has {prompt_tokens} tokens. "
            "Shorten the prompt.", param="messages" if request.messages is not None else "prompt")
    max_tokens = params.max_tokens
    if max_tokens is None or (max_tokens > left and not caller_max_tokens):
        max_tokens = min(max_tokens or left, left)
    elif max_tokens > left:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {context} tokens. However, you requested {prompt_tokens + max_tokens} "
            f"tokens ({prompt_tokens} in the prompt, {max_tokens} for the completion). Lower max_tokens or shorten the "
            "prompt.", param="max_tokens")
    return replace(request, params=replace(params, max_tokens=max_tokens))


def _stream_scopes(*, user, api_key, address: str) -> list[str]:
    if not user.is_authenticated:
        return [f"anon:{address or 'unknown'}"]
    return [f"user:{user.pk}"] + ([f"key:{api_key.pk}"] if api_key is not None else [])


def stream_slots_take(*, user, api_key, address: str) -> list[int]:
    """Hold a slot per scope for a stream about to start, or refuse with a 429 when one is full."""
    cap, now = settings.RUN_MAX_CONCURRENT_STREAMS, timezone.now()
    fresh = now - timedelta(seconds=settings.RUN_STREAM_STALE_SECONDS)
    scopes = _stream_scopes(user=user, api_key=api_key, address=address)
    with transaction.atomic():
        if user.is_authenticated:  # one admission at a time per user (SQLite serializes every write anyway)
            User.objects.select_for_update().filter(pk=user.pk).first()
        StreamSlot.objects.filter(scope__in=scopes, heartbeat__lt=fresh).delete()  # left by a process that died
        streaming = dict(StreamSlot.objects.filter(scope__in=scopes).values_list("scope").annotate(Count("pk")))
        for scope in scopes:
            if streaming.get(scope, 0) >= cap:
                kind = "API key" if scope.startswith("key:") else "account" if scope.startswith("user:") else "address"
                raise TooManyStreams(f"This {kind} already has {cap} answers streaming; wait for one to finish.")
        return [slot.pk for slot in StreamSlot.objects.bulk_create([StreamSlot(scope=s, heartbeat=now) for s in scopes])]


@dataclass
class Meter:
    """Bills a run's tokens as they come and keeps its stream slots alive; `settle` (or `settle_partial`) bills the
    rest when the run ends, `release` frees its slots.

    `tick` counts a token and writes when a write is due; a reader on an event loop calls `count` (no database)
    and, when it says so, `flush` in a thread."""

    quotas: list[Quota]
    slots: list[int]
    billed: int = 0
    produced: int = 0  # completion tokens seen so far (one per piece of text the engine sent)
    produced_billed: int = 0  # of them, billed on the way (whole steps of BILL_EVERY)
    prompt_tokens: int = 0
    last_heartbeat: object = field(default_factory=timezone.now)

    def start(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self._bill(prompt_tokens)

    def tick(self) -> None:
        if self.count():
            self.flush()

    def count(self) -> bool:
        """One more token; True when `flush` has something to write (a bill every BILL_EVERY tokens, a heartbeat)."""
        self.produced += 1
        return self.produced % BILL_EVERY == 0 or self._heartbeat_due(timezone.now())

    def flush(self) -> None:
        """Bill the tokens counted so far in whole steps of BILL_EVERY; refresh the slots' heartbeat when due."""
        due = self.produced // BILL_EVERY * BILL_EVERY - self.produced_billed
        if due > 0:
            self._bill(due)
            self.produced_billed += due
        now = timezone.now()
        if self._heartbeat_due(now):
            StreamSlot.objects.filter(pk__in=self.slots).update(heartbeat=now)
            self.last_heartbeat = now

    def _heartbeat_due(self, now) -> bool:
        return bool(self.slots) and now - self.last_heartbeat >= HEARTBEAT_EVERY

    def settle(self, total_tokens: int) -> None:
        """The run ended: bill what the engine counted beyond what was billed on the way."""
        self._bill(max(total_tokens - self.billed, 0))

    def settle_partial(self) -> int:
        """The client left early: bill what it was sent. Returns the completion tokens counted."""
        self._bill(max(self.prompt_tokens + self.produced - self.billed, 0))
        return self.produced

    def refuse(self) -> None:
        """The engine refused the run once admitted: its slots are freed and its request given back."""
        self.release()
        if self.quotas:
            request_give_back(quotas=self.quotas)

    def release(self) -> None:
        if self.slots:
            StreamSlot.objects.filter(pk__in=self.slots).delete()
            self.slots = []

    def _bill(self, tokens: int) -> None:
        if tokens and self.quotas:
            tokens_add(quotas=self.quotas, tokens=tokens)
        self.billed += tokens

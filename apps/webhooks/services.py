"""Webhooks: endpoints (create, change, rotate the secret, delete), events sent to them, and each delivery attempt.

An event (`fine_tuning.job.succeeded|failed|cancelled`, OpenAI's payload) becomes one delivery per subscribed,
enabled endpoint of the job's owner; a Celery task on the default queue makes each attempt. A failed attempt is
tried again after WEBHOOK_RETRY_BASE_SECONDS x WEBHOOK_RETRY_FACTOR^(n-1) (at most WEBHOOK_RETRY_MAX_SECONDS), up to
WEBHOOK_MAX_ATTEMPTS; an endpoint that fails WEBHOOK_DISABLE_AFTER_FAILURES attempts in a row is disabled and its
owner told (an email, and a notice on the account page until they enable it again).

The delivery row is the truth: an attempt is taken with one conditional UPDATE (attempts N -> N+1, while due), so a
duplicate or late message does nothing, and beat sends again a delivery whose message was lost.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.core.errors import InvalidRequest
from apps.webhooks import outbound
from apps.webhooks.dispatch import webhook_delivery_enqueue
from apps.webhooks.models import (
    JOB_EVENT_TYPES,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from apps.webhooks.signing import secret_new, signed_headers

logger = logging.getLogger(__name__)
Status = WebhookDelivery.Status
ROTATION_GRACE = timedelta(hours=24)  # OpenAI's `keep_old_secret_active_for_24_hours`
# A retry due within this many seconds is sent now with a countdown; a later one is left to beat's sweep (a message
# held by a worker longer than Redis's visibility timeout would be delivered again, and again each time it passes).
COUNTDOWN_LIMIT = 15 * 60


class EndpointLimitReached(InvalidRequest):
    code = "webhook_endpoint_limit_reached"


def webhook_url_check(url: str) -> outbound.Target:
    """The one check of a webhook URL, at creation, on change and before every attempt."""
    return outbound.url_check(url, allow_http=settings.WEBHOOK_ALLOW_HTTP,
                              allowed_networks=tuple(settings.WEBHOOK_ALLOWED_NETWORKS))


def _event_types_check(event_types) -> list[str]:
    if not event_types:
        raise InvalidRequest("Choose at least one event.", param="event_types")
    unknown = [e for e in event_types if e not in JOB_EVENT_TYPES]
    if unknown:
        raise InvalidRequest(f"Unknown event type {unknown[0]!r}: the events are {', '.join(JOB_EVENT_TYPES)}.",
                             param="event_types")
    return [e for e in JOB_EVENT_TYPES if e in event_types]  # the canonical order, once each


def webhook_endpoint_create(*, owner, url: str, description: str = "", event_types=JOB_EVENT_TYPES,
                            enabled: bool = True) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret, which the caller shows this once."""
    webhook_url_check(url)
    event_types = _event_types_check(event_types)
    with transaction.atomic():
        # The owner's row locked: two requests at once cannot both take the last place.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        cap = settings.WEBHOOK_MAX_ENDPOINTS_PER_USER
        if WebhookEndpoint.objects.filter(owner=owner).count() >= cap:
            raise EndpointLimitReached(f"You have {cap} webhook endpoints, the most an account may have: delete one first.")
        secret = secret_new()
        endpoint = WebhookEndpoint.objects.create(owner=owner, url=url.strip(), description=description, secret=secret,
                                                  event_types=event_types, enabled=enabled)
    return endpoint, secret


def webhook_endpoint_update(*, endpoint: WebhookEndpoint, url: str | None = None, description: str | None = None,
                            event_types=None, enabled: bool | None = None) -> WebhookEndpoint:
    """Change what is given. Enabling an endpoint (again) starts its failure count from zero and clears its notice."""
    if url is not None:
        webhook_url_check(url)
        endpoint.url = url.strip()
    if description is not None:
        endpoint.description = description
    if event_types is not None:
        endpoint.event_types = _event_types_check(event_types)
    if enabled is not None:
        if enabled and not endpoint.enabled:
            endpoint.consecutive_failures, endpoint.disabled_reason, endpoint.disabled_at = 0, "", None
        endpoint.enabled = enabled
    endpoint.save()
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()  # its deliveries and their log go with it; a message still queued finds nothing


def webhook_secret_rotate(*, endpoint: WebhookEndpoint, keep_old_secret: bool = False) -> str:
    """A new signing secret, shown this once. The old one stops at once, or signs along for 24 hours."""
    secret = secret_new()
    endpoint.previous_secret = endpoint.secret if keep_old_secret else ""
    endpoint.previous_secret_expires_at = timezone.now() + ROTATION_GRACE if keep_old_secret else None
    endpoint.secret = secret
    endpoint.save(update_fields=["secret", "previous_secret", "previous_secret_expires_at", "updated_at"])
    return secret


def webhook_job_event(*, job) -> list[WebhookDelivery]:
    """A job reached its end (succeeded, failed, cancelled): OpenAI's event to each endpoint of its owner that wants
    it. Called by the job's end, on commit."""
    event_type = f"fine_tuning.job.{job.status}"
    if event_type not in JOB_EVENT_TYPES:
        return []
    finished = job.finished_at or timezone.now()
    return webhook_event_send(owner_id=job.owner_id, event_type=event_type, data={"id": job.public_id},
                              created_at=int(finished.timestamp()))


def webhook_event_send(*, owner_id: int, event_type: str, data: dict, created_at: int) -> list[WebhookDelivery]:
    body = json.dumps({"id": f"evt_{secrets.token_hex(16)}", "object": "event", "created_at": created_at,
                       "type": event_type, "data": data}, separators=(",", ":"))
    event_id = json.loads(body)["id"]
    endpoints = [e for e in WebhookEndpoint.objects.filter(owner_id=owner_id, enabled=True) if event_type in e.event_types]
    with transaction.atomic():
        deliveries = [WebhookDelivery.objects.create(endpoint=e, event_id=event_id, event_type=event_type, body=body,
                                                     next_attempt_at=timezone.now()) for e in endpoints]
        for delivery in deliveries:
            webhook_delivery_enqueue(delivery_id=delivery.pk)
    return deliveries


def retry_delay(attempt: int) -> int:
    """Seconds between failed attempt number `attempt` (1, 2, ...) and the next: exponential, capped."""
    delay = settings.WEBHOOK_RETRY_BASE_SECONDS * settings.WEBHOOK_RETRY_FACTOR ** (attempt - 1)
    return int(min(delay, settings.WEBHOOK_RETRY_MAX_SECONDS))


def _attempt_take(delivery_id: int) -> WebhookDelivery | None:
    """Take the delivery's next attempt if it is due and nobody took it: one conditional UPDATE. While it runs, its
    next_attempt_at is pushed past the attempt's longest time, so beat does not send it again meanwhile."""
    now = timezone.now()
    delivery = WebhookDelivery.objects.filter(pk=delivery_id, status=Status.PENDING).first()
    if delivery is None or (delivery.next_attempt_at and delivery.next_attempt_at > now + timedelta(seconds=1)):
        return None
    held_until = now + timedelta(seconds=2 * settings.WEBHOOK_TIMEOUT_SECONDS + 60)
    taken = WebhookDelivery.objects.filter(pk=delivery.pk, status=Status.PENDING, attempts=delivery.attempts).update(
        attempts=F("attempts") + 1, next_attempt_at=held_until)
    if not taken:
        return None
    delivery.attempts += 1
    return delivery


def webhook_delivery_attempt(*, delivery_id: int) -> WebhookAttempt | None:
    """One attempt of a delivery (the Celery task's body): check the URL again, sign, POST, log, and then retry
    later, finish, or disable the endpoint. None: nothing to do (delivered, given up, or not due yet)."""
    delivery = _attempt_take(delivery_id)
    if delivery is None:
        return None
    endpoint = WebhookEndpoint.objects.select_related("owner").get(pk=delivery.endpoint_id)
    if not endpoint.enabled:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=Status.FAILED, next_attempt_at=None)
        return WebhookAttempt.objects.create(delivery=delivery, number=delivery.attempts,
                                             error="Not sent: the endpoint is disabled.")
    status_code, error, excerpt, duration_ms = _send(endpoint, delivery)
    attempt = WebhookAttempt.objects.create(delivery=delivery, number=delivery.attempts, status_code=status_code,
                                            error=error[:500], response_excerpt=excerpt[:500], duration_ms=duration_ms)
    if attempt.ok:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=Status.SUCCEEDED, next_attempt_at=None)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=0)
        return attempt
    if delivery.attempts >= settings.WEBHOOK_MAX_ATTEMPTS:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(status=Status.FAILED, next_attempt_at=None)
    else:
        delay = retry_delay(delivery.attempts)
        WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() + timedelta(seconds=delay))
        if delay <= COUNTDOWN_LIMIT:
            webhook_delivery_enqueue(delivery_id=delivery.pk, countdown=delay)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(consecutive_failures=F("consecutive_failures") + 1)
    _disable_if_failing(endpoint)
    return attempt


def _send(endpoint: WebhookEndpoint, delivery: WebhookDelivery) -> tuple[int | None, str, str, int]:
    """(status code, error, the answer's first bytes, milliseconds) of one signed POST."""
    started = time.monotonic()
    try:
        target = webhook_url_check(endpoint.url)  # again: what the name resolves to may have changed since creation
    except InvalidRequest as refused:
        return None, f"Not sent: {refused.message}", "", 0
    body = delivery.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"{settings.STORE_NAME}-Webhooks/1.0",
        **signed_headers(secrets_=endpoint.signing_secrets(timezone.now()), message_id=delivery.public_id,
                         timestamp=int(time.time()), body=body),
    }
    try:
        answer = outbound.post(target, body, headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
                               max_bytes=settings.WEBHOOK_RESPONSE_MAX_BYTES)
    except TimeoutError:
        return None, f"No answer within {settings.WEBHOOK_TIMEOUT_SECONDS} s.", "", _ms(started)
    except (OSError, http.client.HTTPException) as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, "", _ms(started)
    error = ""
    if 300 <= answer.status < 400:
        error = "Redirects are not followed: give the final URL."
    elif not 200 <= answer.status < 300:
        error = f"The endpoint answered {answer.status}."
    return answer.status, error, answer.body.decode("utf-8", errors="replace"), answer.duration_ms


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def _disable_if_failing(endpoint: WebhookEndpoint) -> None:
    limit = settings.WEBHOOK_DISABLE_AFTER_FAILURES
    reason = f"Disabled after {limit} failed deliveries in a row."
    disabled = WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True, consecutive_failures__gte=limit).update(
        enabled=False, disabled_reason=reason, disabled_at=timezone.now())
    if not disabled:
        return
    # Its deliveries still waiting for a retry stop here; enabling the endpoint again sends only new events.
    WebhookDelivery.objects.filter(endpoint_id=endpoint.pk, status=Status.PENDING).update(status=Status.FAILED, next_attempt_at=None)
    owner = endpoint.owner
    if owner.email:
        send_mail("Webhook endpoint disabled", f"Your webhook endpoint {endpoint.url} ({endpoint.public_id}) was disabled: "
                  f"{reason} Fix it, then enable it again on your account page.", None, [owner.email], fail_silently=True)


def webhook_deliveries_resend_lost() -> int:
    """Beat, every minute: send the deliveries whose attempt is overdue by a minute: a long retry (no message was
    sent for it), or one whose message was lost with a worker."""
    overdue = timezone.now() - timedelta(seconds=60)
    ids = list(WebhookDelivery.objects.filter(Q(next_attempt_at__lt=overdue), status=Status.PENDING,
                                              endpoint__enabled=True).values_list("pk", flat=True)[:500])
    for pk in ids:
        webhook_delivery_enqueue(delivery_id=pk)
    return len(ids)

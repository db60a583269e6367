"""Reads of webhooks, scoped to the owner. `access_endpoint` is the one permission check on every face: the caller's
own endpoint, or NotFound (another user's endpoint is a 404 like a missing one)."""

from __future__ import annotations

from django.db.models import Prefetch

from apps.core.errors import NotFound
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint


def access_endpoint(*, user, public_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(owner=user, public_id=public_id).first() if user.is_authenticated else None
    if endpoint is None:
        raise NotFound(f"No such webhook endpoint: {public_id}", code="webhook_endpoint_not_found")
    return endpoint


def endpoint_list(*, user):
    return WebhookEndpoint.objects.filter(owner=user)


def delivery_list(*, endpoint: WebhookEndpoint):
    """The endpoint's delivery log, newest first, each delivery with its attempts."""
    attempts = Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number"))
    return WebhookDelivery.objects.filter(endpoint=endpoint).prefetch_related(attempts)


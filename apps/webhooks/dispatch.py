"""Sending the webhooks' Celery tasks by name, once the transaction that wrote the row commits (as apps.tuning.dispatch:
the services send, tasks.py receives, and neither imports the other back). Not routed: the default queue."""

from __future__ import annotations

from celery import current_app
from django.db import transaction

DELIVER_WEBHOOK = "apps.webhooks.tasks.deliver_webhook"
RESEND_LOST_WEBHOOKS = "apps.webhooks.tasks.resend_lost_webhooks"


def webhook_delivery_enqueue(*, delivery_id: int, countdown: int = 0) -> None:
    # Sent only once the row is committed: the worker must find it, and a rolled-back write sends nothing.
    transaction.on_commit(lambda: current_app.send_task(DELIVER_WEBHOOK, args=(delivery_id,), countdown=countdown or None))

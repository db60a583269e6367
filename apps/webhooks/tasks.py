"""Celery entry points for webhooks (default queue): they take ids and call one service."""

import logging

from celery import shared_task

from apps.webhooks import dispatch, services

logger = logging.getLogger(__name__)


@shared_task(name=dispatch.DELIVER_WEBHOOK)
def deliver_webhook(delivery_id: int) -> None:
    """One attempt; the next, if any, is sent by the service with its backoff. A duplicate message does nothing."""
    services.webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name=dispatch.RESEND_LOST_WEBHOOKS)
def resend_lost_webhooks() -> int:
    return services.webhook_deliveries_resend_lost()

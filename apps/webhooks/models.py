"""Webhooks: a user's endpoints, each event's delivery to one endpoint, and every attempt of a delivery (the log).

A delivery is one Standard Webhooks message: its id (`webhook-id`) and its body stay the same over its retries,
so a receiver can drop a duplicate; each attempt signs afresh with its own timestamp.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.fields import EncryptedTextField
from apps.core.models import TimeStampedModel

# The events a job sends (OpenAI's names), in the order a form lists them.
JOB_EVENT_TYPES = ("fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled")


def new_endpoint_id() -> str:
    return f"we_{secrets.token_hex(12)}"


def new_delivery_id() -> str:
    return f"wh_{secrets.token_hex(16)}"


class WebhookEndpoint(TimeStampedModel):
    public_id = models.CharField(max_length=40, unique=True, default=new_endpoint_id)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list)
    enabled = models.BooleanField(default=True)
    # The signing key, `whsec_<base64>`: signing needs it back (it cannot be hashed like a password), so it is stored
    # encrypted under a key derived from SECRET_KEY (apps/core/fields.py). No answer, list or page shows it after
    # the one that created or rotated it.
    secret = EncryptedTextField()
    # After a rotation that keeps the old secret for 24 hours (OpenAI's `keep_old_secret_active_for_24_hours`),
    # messages carry a signature with each secret until then.
    previous_secret = EncryptedTextField(blank=True)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Failed attempts in a row (any success starts again from 0); at WEBHOOK_DISABLE_AFTER_FAILURES the endpoint
    # is disabled, `disabled_reason` says why and the owner is told.
    consecutive_failures = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(max_length=300, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.url})"

    @property
    def secret_hint(self) -> str:
        """Enough of the secret to tell two apart, as OpenAI's `signing_secret_hint`: the prefix and its last 4."""
        return f"whsec_…{self.secret[-4:]}"

    def signing_secrets(self, now) -> list[str]:
        keep_old = self.previous_secret and self.previous_secret_expires_at and self.previous_secret_expires_at > now
        return [self.secret, self.previous_secret] if keep_old else [self.secret]


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCEEDED = "succeeded", _("Delivered")
        FAILED = "failed", _("Failed")

    public_id = models.CharField(max_length=40, unique=True, default=new_delivery_id)  # the `webhook-id` header
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=40, db_index=True)
    event_type = models.CharField(max_length=64)
    body = models.TextField()  # the exact JSON sent (and signed), the same on every attempt
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)  # taken so far; the next one is attempts + 1
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.public_id} {self.event_type} ({self.status})"


class WebhookAttempt(models.Model):
    """One POST of a delivery: what the endpoint answered, or why there was no answer."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_once")]

    def __str__(self) -> str:
        return f"{self.delivery_id} #{self.number}: {self.status_code or self.error}"

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

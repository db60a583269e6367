"""Webhook signing secrets are stored encrypted (apps/core/fields.py): the database holds no secret in plain text,
the store still signs with it, a rotated SECRET_KEY reads old rows through SECRET_KEY_FALLBACKS, and rows written
before encryption are encrypted by the migration."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from apps.webhooks import services
from apps.webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.django_db


def stored(endpoint: WebhookEndpoint) -> tuple[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT secret, previous_secret FROM {WebhookEndpoint._meta.db_table} WHERE id = %s", [endpoint.pk])
        return cursor.fetchone()


def test_the_database_holds_no_secret_in_plain_text(user, hooks_allowed, receiver):
    endpoint, secret = services.webhook_endpoint_create(owner=user, url=receiver.url)
    old = secret
    secret = services.webhook_secret_rotate(endpoint=endpoint, keep_old_secret=True)
    raw_secret, raw_previous = stored(endpoint)
    assert raw_secret.startswith("fernet:") and raw_previous.startswith("fernet:")
    assert secret not in raw_secret and old not in raw_previous and secret[6:] not in raw_secret  # not even base64
    endpoint = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert endpoint.secret == secret and endpoint.previous_secret == old and endpoint.secret_hint.endswith(secret[-4:])
    from django.utils import timezone

    assert endpoint.signing_secrets(timezone.now()) == [secret, old]  # what signs the messages


def test_a_rotated_secret_key_reads_old_rows_through_the_fallbacks(user, hooks_allowed, receiver, settings):
    endpoint, secret = services.webhook_endpoint_create(owner=user, url=receiver.url)
    former = settings.SECRET_KEY
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "a new key " + "x" * 50, [former]
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == secret
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY_FALLBACKS"):
        WebhookEndpoint.objects.get(pk=endpoint.pk)


def test_the_migration_encrypts_rows_written_before(user, hooks_allowed, receiver):
    endpoint, secret = services.webhook_endpoint_create(owner=user, url=receiver.url)
    with connection.cursor() as cursor:  # as the former CharField left it
        cursor.execute(f"UPDATE {WebhookEndpoint._meta.db_table} SET secret = %s WHERE id = %s", [secret, endpoint.pk])
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == secret  # plain rows still read
    migration = importlib.import_module("apps.webhooks.migrations.0002_secrets_encrypted")
    migration.encrypt_existing(django_apps, None)
    assert stored(endpoint)[0].startswith("fernet:") and WebhookEndpoint.objects.get(pk=endpoint.pk).secret == secret

"""Webhook deliveries: a job's end reaches a receiver signed as Standard Webhooks says (through a real Celery worker),
retries with exponential backoff, the delivery log, and an endpoint disabled after failures in a row."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from openai import OpenAI

from apps.webhooks import dispatch, services
from apps.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.live import celery_worker
from tests.webhooks.conftest import (
    LOOPBACK_ONLY,
    job_finish,
    running_job,
    standard_webhooks_verify,
)


def test_a_job_that_succeeds_sends_a_signed_event_through_a_celery_worker(transactional_db, user, receiver, hooks_allowed,
                                                                           tmp_path):
    endpoint, secret = services.webhook_endpoint_create(owner=user, url=receiver.url, description="CI",
                                                        event_types=["fine_tuning.job.succeeded"])
    job = running_job(user)
    with celery_worker(queues="celery", log_path=tmp_path / "worker.log", WEBHOOK_ALLOWED_NETWORKS=",".join(LOOPBACK_ONLY),
                       WEBHOOK_ALLOW_HTTP="true"):
        job_finish(job, "succeeded")
        got = receiver.wait(1)[0]
    job.refresh_from_db()

    assert got.path == "/hooks/store"
    assert got.headers["content-type"] == "application/json"
    assert standard_webhooks_verify(secret, got.headers, got.body)
    assert not standard_webhooks_verify("whsec_" + "A" * 44, got.headers, got.body)  # another key does not verify
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 120
    # OpenAI's own client verifies it too, and reads OpenAI's event.
    event = OpenAI(api_key="unused", webhook_secret=secret).webhooks.unwrap(got.body, got.headers)
    assert event.type == "fine_tuning.job.succeeded" and event.data.id == job.public_id and event.object == "event"
    payload = json.loads(got.body)
    assert set(payload) == {"id", "object", "created_at", "type", "data"} and payload["id"].startswith("evt_")
    assert payload["created_at"] == int(job.finished_at.timestamp()) and payload["data"] == {"id": job.public_id}

    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert got.headers["webhook-id"] == delivery.public_id and delivery.status == "succeeded" and delivery.attempts == 1
    attempt = delivery.attempt_log.get()
    assert attempt.status_code == 200 and attempt.error == "" and attempt.response_excerpt == "ok"


@pytest.fixture
def sent(monkeypatch):
    """The delivery tasks sent to the broker, (delivery id, countdown) each: the test runs them itself."""
    messages = []

    class Broker:
        @staticmethod
        def send_task(name, args, countdown=None):
            assert name == dispatch.DELIVER_WEBHOOK
            messages.append((args[0], countdown))

    monkeypatch.setattr(dispatch, "current_app", Broker)
    return messages


def run_due(delivery: WebhookDelivery) -> WebhookAttempt | None:
    """The retry's time has come (as if its countdown ran out): run the task's service."""
    WebhookDelivery.objects.filter(pk=delivery.pk, status="pending").update(next_attempt_at=None)
    return services.webhook_delivery_attempt(delivery_id=delivery.pk)


def test_failed_and_cancelled_jobs_send_their_events_to_the_endpoints_that_want_them(transactional_db, user, other_user, receiver, hooks_allowed,
                                                                                      sent):
    everything, _ = services.webhook_endpoint_create(owner=user, url=receiver.url)
    only_success, _ = services.webhook_endpoint_create(owner=user, url=receiver.url, event_types=["fine_tuning.job.succeeded"])
    services.webhook_endpoint_create(owner=other_user, url=receiver.url)  # another user's: never told of this user's jobs
    paused, _ = services.webhook_endpoint_create(owner=user, url=receiver.url, enabled=False)
    for status in ("failed", "cancelled"):
        job_finish(running_job(user), status)
    deliveries = WebhookDelivery.objects.order_by("id")
    assert [(d.endpoint_id, d.event_type) for d in deliveries] == [
        (everything.pk, "fine_tuning.job.failed"), (everything.pk, "fine_tuning.job.cancelled")]
    assert [pk for pk, _ in sent] == [d.pk for d in deliveries]
    for d in deliveries:
        assert services.webhook_delivery_attempt(delivery_id=d.pk).status_code == 200
    assert [json.loads(r.body)["type"] for r in receiver.received] == ["fine_tuning.job.failed", "fine_tuning.job.cancelled"]
    assert not only_success.deliveries.exists() and not paused.deliveries.exists()


def test_a_failing_endpoint_is_retried_with_exponential_backoff_then_given_up(transactional_db, user, receiver, hooks_allowed, sent, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 5
    settings.WEBHOOK_RETRY_BASE_SECONDS, settings.WEBHOOK_RETRY_FACTOR, settings.WEBHOOK_RETRY_MAX_SECONDS = 30, 4, 3600
    assert [services.retry_delay(n) for n in range(1, 6)] == [30, 120, 480, 1920, 3600]  # the last one capped
    receiver.status, receiver.answer = 503, b"busy"
    endpoint, _ = services.webhook_endpoint_create(owner=user, url=receiver.url)
    [delivery] = services.webhook_event_send(owner_id=user.pk, event_type="fine_tuning.job.failed", data={"id": "ftjob-1"},
                                             created_at=1)

    first = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    assert first.status_code == 503 and first.error == "The endpoint answered 503." and first.response_excerpt == "busy"
    delivery.refresh_from_db()
    assert delivery.status == "pending" and 25 <= (delivery.next_attempt_at - first.created_at).total_seconds() <= 35
    # A duplicate message, or one that comes early, does nothing: the retry is not due yet.
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk) is None
    for _ in range(3):
        assert run_due(delivery).status_code == 503
    assert [countdown for _, countdown in sent] == [None, 30, 120, 480]  # the first at once, then the backoff
    # A retry after more than COUNTDOWN_LIMIT (1920 s) is no message held by a worker: beat sends it once it is due.
    delivery.refresh_from_db()
    assert 1900 <= (delivery.next_attempt_at - timezone.now()).total_seconds() <= 1920
    assert services.webhook_deliveries_resend_lost() == 0
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=61))
    assert services.webhook_deliveries_resend_lost() == 1 and sent[-1] == (delivery.pk, None)
    assert services.webhook_delivery_attempt(delivery_id=delivery.pk).status_code == 503  # the 5th and last
    assert run_due(delivery) is None  # given up: nothing more to do
    assert services.webhook_deliveries_resend_lost() == 0

    delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 5 and len(receiver.received) == 5
    assert len(sent) == 5
    assert list(delivery.attempt_log.order_by("number").values_list("number", flat=True)) == [1, 2, 3, 4, 5]
    # The same message each time: one webhook-id and one body, signed afresh.
    assert len({(r.headers["webhook-id"], r.body) for r in receiver.received}) == 1
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 5 and endpoint.enabled


def test_a_success_starts_the_failure_count_again(transactional_db, user, receiver, hooks_allowed, sent):
    endpoint, _ = services.webhook_endpoint_create(owner=user, url=receiver.url)
    [delivery] = services.webhook_event_send(owner_id=user.pk, event_type="fine_tuning.job.failed", data={"id": "ftjob-1"},
                                             created_at=1)
    receiver.status = 500
    services.webhook_delivery_attempt(delivery_id=delivery.pk)
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).consecutive_failures == 1
    receiver.status = 204
    assert run_due(delivery).ok
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).consecutive_failures == 0
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "succeeded"


def test_an_endpoint_failing_n_times_in_a_row_is_disabled_and_its_owner_told(transactional_db, client, user, receiver, hooks_allowed, sent, settings):
    settings.WEBHOOK_DISABLE_AFTER_FAILURES, settings.WEBHOOK_MAX_ATTEMPTS = 3, 2
    receiver.status = 500
    endpoint, _ = services.webhook_endpoint_create(owner=user, url=receiver.url)
    event = {"owner_id": user.pk, "event_type": "fine_tuning.job.succeeded", "created_at": 1}
    [first] = services.webhook_event_send(data={"id": "ftjob-1"}, **event)
    [second] = services.webhook_event_send(data={"id": "ftjob-2"}, **event)
    services.webhook_delivery_attempt(delivery_id=first.pk)
    run_due(first)  # its last attempt
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled and mail.outbox == []
    services.webhook_delivery_attempt(delivery_id=second.pk)  # the third failure in a row

    endpoint.refresh_from_db()
    assert not endpoint.enabled and endpoint.disabled_reason == "Disabled after 3 failed deliveries in a row."
    assert WebhookDelivery.objects.get(pk=second.pk).status == "failed"  # its retry is dropped
    assert run_due(second) is None and len(receiver.received) == 3
    assert len(mail.outbox) == 1 and endpoint.url in mail.outbox[0].body and mail.outbox[0].to == [user.email]
    # New events skip it; the account page tells its owner.
    assert services.webhook_event_send(data={"id": "ftjob-3"}, **event) == []
    client.force_login(user)
    page = client.get("/accounts/").content.decode()
    assert f"Your webhook endpoint {endpoint.url} was disabled: Disabled after 3 failed deliveries in a row." in page

    # Enabled again (after the owner fixed it): the count starts from zero and the notice goes.
    services.webhook_endpoint_update(endpoint=endpoint, enabled=True)
    endpoint.refresh_from_db()
    assert endpoint.enabled and endpoint.consecutive_failures == 0 and endpoint.disabled_reason == ""
    assert "was disabled" not in client.get("/accounts/").content.decode()


def test_a_redirect_is_a_failure_and_is_not_followed(transactional_db, user, receiver, hooks_allowed, sent):
    receiver.status, receiver.headers = 302, {"Location": "http://169.254.169.254/latest/meta-data/"}
    services.webhook_endpoint_create(owner=user, url=receiver.url)
    [delivery] = services.webhook_event_send(owner_id=user.pk, event_type="fine_tuning.job.failed", data={"id": "x"}, created_at=1)
    attempt = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    assert attempt.status_code == 302 and not attempt.ok and "Redirects are not followed" in attempt.error
    assert len(receiver.received) == 1


def test_an_endpoint_slower_than_the_timeout_fails_that_attempt(transactional_db, user, receiver, hooks_allowed, sent, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.delay = 3
    services.webhook_endpoint_create(owner=user, url=receiver.url)
    [delivery] = services.webhook_event_send(owner_id=user.pk, event_type="fine_tuning.job.failed", data={"id": "x"}, created_at=1)
    started = time.monotonic()
    attempt = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    assert time.monotonic() - started < 2.5
    assert attempt.status_code is None and attempt.error == "No answer within 1 s." and 900 <= attempt.duration_ms < 2500
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"  # tried again later

"""Webhook endpoints on /api/v1 and the account page: the secret shown once (and rotated), another user's endpoint and
deliveries out of reach, the cap per user."""

from __future__ import annotations

import json

import pytest

from apps.accounts.services import api_key_create
from apps.webhooks import services
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.webhooks.conftest import standard_webhooks_verify

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client, hooks_allowed):
    def call(user, method, path, body=None):
        key = api_key_create(user=user, name="k")[1]
        kwargs = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return getattr(client, method)(f"/api/v1/webhooks/{path}", **kwargs)

    return call


def test_the_secret_is_shown_at_creation_and_rotation_only(api, user, receiver):
    created = api(user, "post", "", {"url": receiver.url, "description": "CI", "event_types": ["fine_tuning.job.failed"]})
    assert created.status_code == 201, created.content
    body = created.json()
    secret = body["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert body["object"] == "webhook_endpoint" and body["id"].startswith("we_") and body["enabled"] is True
    assert body["event_types"] == ["fine_tuning.job.failed"] and body["signing_secret_hint"] == f"whsec_…{secret[-4:]}"
    endpoint_id = body["id"]
    for path in ("", f"{endpoint_id}/", f"{endpoint_id}/deliveries/"):
        shown = api(user, "get", path)
        assert shown.status_code == 200 and secret not in shown.content.decode() and "signing_secret\"" not in shown.content.decode()
    changed = api(user, "patch", f"{endpoint_id}/", {"description": "renamed"})
    assert changed.status_code == 200 and secret not in changed.content.decode()

    rotated = api(user, "post", f"{endpoint_id}/rotate-secret/", {})
    assert rotated.status_code == 200
    new_secret = rotated.json()["signing_secret"]
    assert new_secret != secret and WebhookEndpoint.objects.get(public_id=endpoint_id).secret == new_secret
    assert new_secret not in api(user, "get", f"{endpoint_id}/").content.decode()


def test_a_rotation_may_keep_the_old_secret_signing_for_24_hours(user, receiver, hooks_allowed):
    # The test runs the attempts itself (in the test's transaction, the task messages are never sent).
    endpoint, old = services.webhook_endpoint_create(owner=user, url=receiver.url)
    new = services.webhook_secret_rotate(endpoint=endpoint, keep_old_secret=True)
    [delivery] = services.webhook_event_send(owner_id=user.pk, event_type="fine_tuning.job.failed", data={"id": "x"}, created_at=1)
    services.webhook_delivery_attempt(delivery_id=delivery.pk)
    got = receiver.received[-1]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert standard_webhooks_verify(new, got.headers, got.body) and standard_webhooks_verify(old, got.headers, got.body)

    newest = services.webhook_secret_rotate(endpoint=endpoint)  # the old one stops at once
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="pending", next_attempt_at=None)
    services.webhook_delivery_attempt(delivery_id=delivery.pk)
    got = receiver.received[-1]
    assert standard_webhooks_verify(newest, got.headers, got.body) and not standard_webhooks_verify(new, got.headers, got.body)


def test_another_user_can_neither_read_nor_change_an_endpoint_or_its_deliveries(api, user, other_user, receiver):
    endpoint, _ = services.webhook_endpoint_create(owner=user, url=receiver.url, description="mine")
    WebhookDelivery.objects.create(endpoint=endpoint, event_id="evt_1", event_type="fine_tuning.job.failed", body="{}")
    eid = endpoint.public_id
    for method, path, body in [("get", f"{eid}/", None), ("patch", f"{eid}/", {"url": "https://93.184.215.14/stolen"}),
                               ("delete", f"{eid}/", None), ("post", f"{eid}/rotate-secret/", {}),
                               ("get", f"{eid}/deliveries/", None)]:
        response = api(other_user, method, path, body)
        assert response.status_code == 404, (method, path, response.status_code)
        assert response.json()["error"]["code"] == "webhook_endpoint_not_found"
    assert eid not in api(other_user, "get", "").content.decode()
    after = WebhookEndpoint.objects.get(pk=endpoint.pk)
    assert (after.url, after.secret, after.description) == (endpoint.url, endpoint.secret, "mine")
    assert api(user, "get", f"{eid}/deliveries/").json()["results"][0]["event_id"] == "evt_1"

    # ... nor on the pages.
    from django.test import Client

    browser = Client()
    browser.force_login(other_user)
    assert browser.get(f"/accounts/webhooks/{eid}/").status_code == 404
    assert browser.post(f"/accounts/webhooks/{eid}/rotate").status_code == 404
    assert browser.post(f"/accounts/webhooks/{eid}/delete").status_code == 404
    assert eid not in browser.get("/accounts/").content.decode()
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).secret == endpoint.secret


def test_an_account_may_have_a_capped_number_of_endpoints(api, user, other_user, receiver, settings):
    settings.WEBHOOK_MAX_ENDPOINTS_PER_USER = 2
    for _ in range(2):
        assert api(user, "post", "", {"url": receiver.url}).status_code == 201
    refused = api(user, "post", "", {"url": receiver.url})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["code"] == "webhook_endpoint_limit_reached" and "2 webhook endpoints" in error["message"]
    assert api(other_user, "post", "", {"url": receiver.url}).status_code == 201  # per user
    api(user, "delete", f"{WebhookEndpoint.objects.filter(owner=user).first().public_id}/")
    assert api(user, "post", "", {"url": receiver.url}).status_code == 201


def test_bad_input_is_a_clear_400(api, user, receiver):
    for body, param in [({"url": receiver.url, "event_types": ["batch.completed"]}, "event_types[0]"),
                        ({"url": receiver.url, "event_types": []}, "event_types"), ({}, "url")]:
        response = api(user, "post", "", body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, response.content


def test_the_account_page_adds_an_endpoint_shows_its_secret_once_and_lists_it(client, user, receiver, hooks_allowed):
    client.force_login(user)
    page = client.get("/accounts/")
    assert page.status_code == 200 and 'id="webhooks"' in page.content.decode()
    created = client.post("/accounts/webhooks/new", {"url": receiver.url, "description": "Build bot",
                                                     "event_types": ["fine_tuning.job.succeeded"]})
    assert created.status_code == 200
    endpoint = WebhookEndpoint.objects.get(owner=user)
    assert endpoint.secret in created.content.decode()
    account = client.get("/accounts/").content.decode()
    assert receiver.url in account and "Build bot" in account and endpoint.secret not in account
    detail = client.get(f"/accounts/webhooks/{endpoint.public_id}/").content.decode()
    assert endpoint.secret not in detail and endpoint.secret_hint in detail

    rotated = client.post(f"/accounts/webhooks/{endpoint.public_id}/rotate")
    endpoint.refresh_from_db()
    assert endpoint.secret in rotated.content.decode()

    refused = client.post("/accounts/webhooks/new", {"url": "http://169.254.169.254/", "event_types": ["fine_tuning.job.failed"]},
                          follow=True)
    assert "link-local" in refused.content.decode() and WebhookEndpoint.objects.filter(owner=user).count() == 1

    saved = client.post(f"/accounts/webhooks/{endpoint.public_id}/", {"url": receiver.url, "description": "Renamed",
                                                                       "event_types": ["fine_tuning.job.failed"]})
    assert saved.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.description == "Renamed" and not endpoint.enabled and endpoint.event_types == ["fine_tuning.job.failed"]
    bad = client.post(f"/accounts/webhooks/{endpoint.public_id}/", {"url": "http://10.0.0.1/", "event_types": ["fine_tuning.job.failed"]})
    assert bad.status_code == 400 and "private address" in bad.content.decode()

    assert client.post(f"/accounts/webhooks/{endpoint.public_id}/delete").status_code == 302
    assert not WebhookEndpoint.objects.filter(owner=user).exists()

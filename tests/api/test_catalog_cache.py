"""The catalog list's page cache and the API key cache (both under generation counters, apps/core/generations.py):
a read after any change a page shows sees the change, an owner's private fields never reach another caller through
a shared page, and a revoked key, an expired key or a deactivated user is refused on the very next request.

These tests run outside a test transaction (`transaction=True`): inside one, nothing is cached (a rollback could
move a counter back), which is also what every other test of the suite relies on."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.services import api_key_create, api_key_revoke
from apps.catalog.models import Category, StoreApp
from apps.catalog.services import app_delete, app_publish, review_save
from tests.catalog.conftest import make_app

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/v1/apps/?limit=10"


def caller(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=user, name='test')[1]}")


def page(client, url=URL) -> dict:
    response = client.get(url)
    assert response.status_code == 200, response.content
    return {row["slug"]: row for row in response.json()["results"]}


def test_a_repeated_read_is_served_from_the_cache(tiny_version, user, other_user):
    make_app(user, name="One")
    reader = caller(other_user)
    first = page(reader)
    with CaptureQueriesContext(connection) as queries:
        again = page(reader)
    assert again == first
    # The two counters (keys, catalog) and nothing else: no key lookup, no catalog query.
    assert [q["sql"].split(" FROM ")[0] for q in queries] == ["SELECT value"] * 2, queries.captured_queries


def test_every_change_a_page_shows_is_seen_at_the_next_read(tiny_version, user, other_user):
    app = make_app(user, name="Lighthouse")
    reader = caller(other_user)
    assert page(reader)[app.slug]["rating"] == {"average": None, "count": 0}

    review_save(app=app, user=other_user, rating=4, text="Good.")
    assert page(reader)[app.slug]["rating"] == {"average": 4.0, "count": 1}

    category = Category.objects.create(slug="sea", name="Sea")
    StoreApp.objects.filter(pk=app.pk).update(category=category)  # no signal: invisible until a signalled change
    category.name = "The sea"
    category.save()
    assert page(reader)[app.slug]["category"] == "sea"

    user.username = "keeper"
    user.save()
    assert page(reader)[app.slug]["creator"] == "keeper"

    second = make_app(user, name="Harbour")
    assert set(page(reader)) >= {app.slug, second.slug}
    app_publish(app=second, user=user, visibility="private")
    assert second.slug not in page(reader)
    app_delete(app=app, user=user)
    assert app.slug not in page(reader)


def test_the_admin_s_unlist_action_empties_the_cached_pages(tiny_version, user, other_user, admin_client):
    app = make_app(user, name="Unlisted soon")
    reader = caller(other_user)
    assert app.slug in page(reader)
    response = admin_client.post("/admin/catalog/storeapp/", {"action": "unlist", "_selected_action": [app.pk]})
    assert response.status_code == 302
    assert not StoreApp.objects.get(pk=app.pk).is_listed
    assert app.slug not in page(reader)


@pytest.mark.parametrize("owner_first", [True, False])
def test_a_shared_page_never_carries_an_owner_s_private_fields(tiny_version, user, other_user, owner_first):
    app = make_app(user, name="Secretive", secret_strings=["PX-41"])
    owner, reader = caller(user), caller(other_user)
    order = [(owner, True), (reader, False)] if owner_first else [(reader, False), (owner, True)]
    for _ in range(2):  # the first read of the two fills the cache, every later one is served from it
        for client, is_owner in order:
            row = page(client)[app.slug]
            if is_owner:
                assert row["instructions"].startswith("SECRET-INSTRUCTIONS") and row["secret_strings"] == ["PX-41"]
            else:
                assert (row["instructions"], row["prompt_template"], row["secret_strings"]) == (None, None, None)


def test_pages_differ_by_query(tiny_version, user, other_user):
    generator = make_app(user, name="Poem maker", kind="generator", prompt_template="A poem about {topic}",
                         input_fields=[{"name": "topic", "label": "Topic"}])
    chatbot = make_app(user, name="Talker")
    reader = caller(other_user)
    assert set(page(reader, URL + "&kind=generator")) == {generator.slug}
    assert chatbot.slug in page(reader, URL + "&kind=chatbot") and generator.slug not in page(reader, URL + "&kind=chatbot")
    assert reader.get(URL + "&kind=nonsense").status_code == 400


def test_a_revoked_key_is_refused_at_the_next_request(user):
    key, raw = api_key_create(user=user, name="soon revoked")
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(URL).status_code == 200
    assert client.get(URL).status_code == 200  # now from the cache
    api_key_revoke(key=key)
    assert client.get(URL).status_code == 401


def test_an_expired_key_and_an_inactive_user_are_refused_at_the_next_request(user, other_user):
    key, raw = api_key_create(user=user, name="expires", expires_at=timezone.now() + timedelta(hours=1))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(URL).status_code == 200
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save()
    assert client.get(URL).status_code == 401

    other = caller(other_user)
    assert other.get(URL).status_code == 200
    other_user.is_active = False
    other_user.save()
    assert other.get(URL).status_code == 401


def test_a_key_expires_on_time_without_any_change(user):
    _key, raw = api_key_create(user=user, name="short", expires_at=timezone.now() + timedelta(seconds=2))
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get(URL).status_code == 200  # kept, with its expiry
    time.sleep(2.1)
    assert client.get(URL).status_code == 401

"""AppSerializer's written-out to_representation (the catalog list's fast path) gives exactly what DRF's generic
field walk gives, for every field, for the owner and for others, on rows from the list's query and on plain rows."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from rest_framework import serializers

from apps.api.serializers import AppSerializer
from apps.catalog.models import Category, StoreApp
from apps.catalog.selectors import app_catalog
from apps.catalog.services import review_save
from tests.catalog.conftest import make_app

pytestmark = pytest.mark.django_db


def both(app, viewer):
    request = RequestFactory().get("/api/v1/apps/")
    request.user = viewer
    serializer = AppSerializer(context={"request": request})
    return serializer.to_representation(app), serializers.ModelSerializer.to_representation(serializer, app)


def test_every_field_as_drf_gives_it(tiny_version, user, other_user):
    category = Category.objects.create(slug="writing", name="Writing")
    shared = make_app(user, name="Linked", visibility="link", category=category, secret_strings=["PX-41"],
                      input_fields=[{"name": "topic", "label": "Topic"}], temperature=1, top_p=0.5)
    review_save(app=shared, user=other_user, rating=4, text="good")
    draft = make_app(user, name="Draft", visibility=None, kind="generator", prompt_template="About {topic}")
    listed = make_app(other_user, name="Listed", category=category)
    builtin = StoreApp.objects.create(slug="builtin", name="Built in", short_description="x", is_builtin=True,
                                      visibility="public")
    rows = list(app_catalog()) + [StoreApp.objects.get(pk=p) for p in (shared.pk, draft.pk, builtin.pk)]
    assert {a.pk for a in rows} >= {listed.pk, builtin.pk, shared.pk, draft.pk}
    for app in rows:
        for viewer in (user, other_user):
            fast, generic = both(app, viewer)
            assert fast == generic
            assert list(fast) == list(generic)  # the same order of keys, so the same JSON text
    fast, _ = both(StoreApp.objects.get(pk=shared.pk), user)
    assert fast["secret_strings"] == ["PX-41"] and fast["rating"] == {"average": 4.0, "count": 1}
    assert fast["url"].startswith("http://testserver/") and fast["model_id"].startswith("app:linked-")
    assert both(StoreApp.objects.get(pk=shared.pk), other_user)[0]["secret_strings"] is None

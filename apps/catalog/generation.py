"""The catalog's generation counter: moved by every change that a catalog listing shows.

Apps, reviews (ratings), categories and creators' names. Receivers run in the writer's transaction; bulk updates
that skip signals (the admin's unlist/relist actions) call `catalog_changed()` themselves. /api/v1's catalog list
caches its pages under the counter's value (apps/api/native/catalog.py).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save

from apps.catalog.models import Category, Review, StoreApp
from apps.core import generations

CATALOG = "catalog"


def catalog_generation() -> int:
    return generations.current(CATALOG)


def catalog_changed(**_kwargs) -> None:
    generations.bump(CATALOG)


def _user_saved(update_fields=None, **_kwargs) -> None:
    if update_fields is not None and set(update_fields) <= {"last_login", "password"}:
        return  # a login or a password change: nothing a listing shows
    catalog_changed()


def connect() -> None:
    for model in (StoreApp, Review, Category):
        post_save.connect(catalog_changed, sender=model, dispatch_uid=f"catalog-generation-{model.__name__}-save")
        post_delete.connect(catalog_changed, sender=model, dispatch_uid=f"catalog-generation-{model.__name__}-delete")
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="catalog-generation-user")

"""Who may use or change a store app: one helper per outcome, used by every face (pages, /api/v1, /v1).

Zulip's `access_*` style: a view never re-codes the rule, it asks here and gets the app or an error.
- an app the caller may not see (another user's private app or draft, an app a moderator unlisted) is a
  `NotFound` everywhere: no hint that it exists;
- an app the caller may see but does not own is a `Forbidden` (403) for anything that changes it.

An app is named by its address (`StoreApp.address`): its slug, or for a link-only app `<slug>-<token>`. Others
reach a link-only app at its token address only (its plain slug is a 404 for them, as for an app that does not
exist: a slug is `slugify(name)`, easy to guess); its creator reaches it at both.
"""

from __future__ import annotations

from django.db.models import Q
from django.utils.translation import gettext as _

from apps.catalog.models import StoreApp, address_split
from apps.core.errors import Forbidden, NotFound

SHARED = [StoreApp.Visibility.PUBLIC, StoreApp.Visibility.LINK]


def _open() -> Q:
    """Published and not unlisted by a moderator."""
    return Q(published_at__isnull=False, is_listed=True)


def _own(user) -> Q:
    if user is not None and user.is_authenticated:
        return Q(creator=user)
    return Q(pk__in=[])


def _find(user, address: str) -> StoreApp | None:
    apps = StoreApp.objects.select_related("category", "creator")
    split = address_split(address)
    if split is not None:  # the token address of a shared app (a public one keeps the token it had as link-only)
        slug, token = split
        app = apps.filter(_open() & Q(visibility__in=SHARED) | _own(user), slug=slug, link_token=token).first()
        if app is not None:
            return app
    return apps.filter(_open() & Q(visibility=StoreApp.Visibility.PUBLIC) | _own(user), slug=address).first()


def access_app(*, user, slug: str) -> StoreApp:
    """The app at this address (`slug`: a slug or a link-only app's token address) that the user may open and run,
    the built-ins included. NotFound otherwise."""
    app = _find(user, slug)
    if app is None:
        raise NotFound(f"The app {slug!r} does not exist.", code="app_not_found")
    return app


def access_app_owned(*, user, slug: str) -> StoreApp:
    """An app the user may change: their own. NotFound if they may not see it, Forbidden if it is someone else's."""
    app = access_app(user=user, slug=slug)
    if user is None or not user.is_authenticated or app.creator_id != user.pk:
        raise Forbidden(_("Only the app's creator can change it."), code="not_owner")
    return app

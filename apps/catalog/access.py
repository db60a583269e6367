"""Who may use or change a store app: one helper per outcome, used by every face (pages, /api/v1, /v1).

Zulip's `access_*` style: a view never re-codes the rule, it asks here and gets the app or an error.
- an app the caller may not see (another user's private app or draft, an app a moderator unlisted) is a
  `NotFound` everywhere: no hint that it exists;
- an app the caller may see but does not own is a `Forbidden` (403) for anything that changes it.
"""

from __future__ import annotations

from django.db.models import Q
from django.utils.translation import gettext as _

from apps.catalog.models import StoreApp
from apps.core.errors import Forbidden, NotFound


def _visible_to(user) -> Q:
    """Published, not unlisted, public or link-shared; or the user's own, drafts and private ones included."""
    visible = Q(published_at__isnull=False, is_listed=True,
                visibility__in=[StoreApp.Visibility.PUBLIC, StoreApp.Visibility.LINK])
    if user is not None and user.is_authenticated:
        visible |= Q(creator=user)
    return visible


def access_app(*, user, slug: str) -> StoreApp:
    """An app the user may open and run (the built-ins included). NotFound otherwise."""
    app = StoreApp.objects.filter(_visible_to(user), slug=slug).select_related("category", "creator").first()
    if app is None:
        raise NotFound(f"The app {slug!r} does not exist.", code="app_not_found")
    return app


def access_app_owned(*, user, slug: str) -> StoreApp:
    """An app the user may change: their own. NotFound if they may not see it, Forbidden if it is someone else's."""
    app = access_app(user=user, slug=slug)
    if user is None or not user.is_authenticated or app.creator_id != user.pk:
        raise Forbidden(_("Only the app's creator can change it."), code="not_owner")
    return app

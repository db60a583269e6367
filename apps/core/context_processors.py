from django.conf import settings
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext_lazy as _

# The header's sections. A section appears once its URL exists, so the header never links to a missing page.
NAV = [
    (_("Store"), "catalog:home"),
    (_("Build"), "catalog:build"),
    (_("Customize"), "tuning:customize"),
    (_("Models"), "registry:model-list"),
    (_("API docs"), "api-docs"),
]


def _nav_links() -> list[tuple[str, str]]:
    links = []
    for label, name in NAV:
        try:
            links.append((label, reverse(name)))
        except NoReverseMatch:
            continue
    return links


def site(request):
    return {"store_name": settings.STORE_NAME, "nav_links": _nav_links()}

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
    context = {"store_name": settings.STORE_NAME, "nav_links": _nav_links()}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        from apps.tuning.models import FineTuningJob

        # The site's notice that a job ended (an email goes out too); cleared when the owner looks at it.
        context["finished_jobs"] = list(
            FineTuningJob.objects.filter(owner=user, owner_notified=False, status__in=FineTuningJob.FINISHED).values_list("public_id", "status")[:3]
        )
    return context

"""Reads of the catalog. Every one is scoped: a private app is its creator's alone, everywhere (404 for others).

One app by slug for a user: `apps.catalog.access` (`access_app`, `access_app_owned`)."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.db.models import Avg, Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.catalog.models import Category, StoreApp
from apps.chat.models import AppRun, Conversation
from apps.registry.selectors import registered_model_list

TRENDING_DAYS = 7


def _listed() -> Q:
    """In the catalog: public, published, not unlisted by a moderator."""
    return Q(visibility=StoreApp.Visibility.PUBLIC, published_at__isnull=False, is_listed=True)


def app_catalog() -> QuerySet[StoreApp]:
    return (
        StoreApp.objects.filter(_listed())
        .select_related("category", "creator")
        .annotate(rating=Avg("reviews__rating"), review_count=Count("reviews", distinct=True))
    )


def app_search(*, query: str) -> QuerySet[StoreApp]:
    """Name, descriptions and category; ranked by relevance with PostgreSQL's full-text search."""
    apps = app_catalog()
    query = query.strip()
    if not query:
        return apps.order_by("-published_at")
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector

        vector = (
            SearchVector("name", weight="A")
            + SearchVector("short_description", "category__name", weight="B")
            + SearchVector("description", weight="C")
        )
        search = SearchQuery(query, search_type="websearch")
        ranked = apps.annotate(document=vector, rank=SearchRank(vector, search)).filter(
            Q(document=search) | Q(name__icontains=query)
        )
        return ranked.order_by("-rank", "-published_at")
    words = query.split()
    match = Q()
    for word in words:
        match &= (
            Q(name__icontains=word) | Q(short_description__icontains=word) | Q(description__icontains=word)
            | Q(category__name__icontains=word)
        )
    return apps.filter(match).order_by("-is_featured", "-published_at")


def app_trending(*, limit: int = 8) -> list[StoreApp]:
    since = timezone.now() - timedelta(days=TRENDING_DAYS)
    return list(
        app_catalog()
        .annotate(recent_runs=Count("runs", filter=Q(runs__created_at__gte=since), distinct=True))
        .filter(recent_runs__gt=0)
        .order_by("-recent_runs", "-published_at")[:limit]
    )


def app_top_rated(*, limit: int = 8) -> list[StoreApp]:
    return list(app_catalog().filter(review_count__gt=0).order_by("-rating", "-review_count")[:limit])


def app_home_sections() -> dict:
    catalog = app_catalog()
    return {
        "featured": list(catalog.filter(is_featured=True).order_by("name")[:8]),
        "trending": app_trending(),
        "top_rated": app_top_rated(),
        "newest": list(catalog.order_by("-published_at")[:8]),
        "categories": list(Category.objects.annotate(app_count=Count("apps", filter=_listed_for_category()))),
    }


def _listed_for_category() -> Q:
    return Q(apps__visibility=StoreApp.Visibility.PUBLIC, apps__published_at__isnull=False, apps__is_listed=True)


def app_list_for_creator(*, creator) -> QuerySet[StoreApp]:
    return app_catalog().filter(creator=creator).order_by("-published_at")


def app_list_owned(*, user) -> QuerySet[StoreApp]:
    """A user's own apps, drafts and private ones included, with their usage."""
    runs = AppRun.objects.filter(app=OuterRef("pk")).values("app")
    return (
        StoreApp.objects.filter(creator=user)
        .select_related("category")
        .annotate(
            run_count=Coalesce(Subquery(runs.annotate(n=Count("pk")).values("n")), 0),
            tokens=Coalesce(Subquery(runs.annotate(n=Sum("completion_tokens")).values("n")), 0),
            conversation_count=Coalesce(
                Subquery(Conversation.objects.filter(app=OuterRef("pk")).values("app").annotate(n=Count("pk")).values("n")), 0
            ),
        )
        .order_by("-updated_at")
    )


def builder_model_choices(*, user, classifiers: bool = False) -> list[tuple[str, str]]:
    """The models an app of `user` may run on (the builder's model picker; /compare/ offers the same): the store's
    models and the user's own. The first choice of each model is its alias `latest` (the app follows it as it
    moves); its other aliases and each ready version (`@v<N>`: the app stays on it) follow. Models that generate,
    or (`classifiers`) the classifiers, which serve classifier apps only (a model's task is its latest version's)."""
    choices = []
    for model in registered_model_list(user=user).prefetch_related("versions"):
        if model.owner_id is not None and model.owner_id != user.pk:
            continue
        newest = max(model.versions.all(), key=lambda v: v.number, default=None)
        if newest is None or (newest.task == newest.Task.CLASSIFIER) != classifiers:
            continue
        label = model.name if model.owner_id is None else f"{model.name} ({_('your fine-tune')})"
        choices.append((f"{model.name}@latest", label))
        aliases = {a.name: a.version.number for a in model.aliases.all()}
        choices += [(f"{model.name}@{name}", f"{model.name}@{name} → v{number}") for name, number in sorted(aliases.items())
                    if name != "latest"]
        choices += [(v.reference, v.reference) for v in sorted(model.versions.all(), key=lambda v: -v.number)
                    if v.status == v.Status.READY]
    return choices


def builder_model_groups(*, user) -> list[tuple[str, list[tuple[str, str]]]]:
    """The builder's picker in two groups: models that generate (chatbots, generators) and classifiers (classifier
    apps); saving an app refuses a model of the other group (catalog.services.model_task_check)."""
    groups = [(_("Chat and language models"), builder_model_choices(user=user)),
              (_("Classifiers (for classifier apps)"), builder_model_choices(user=user, classifiers=True))]
    return [(name, choices) for name, choices in groups if choices]


def conversation_count_label(count: int) -> str:
    """'1K+' style buckets, as the GPT Store shows them."""
    for threshold, label in [(1_000_000, "1M+"), (100_000, "100K+"), (10_000, "10K+"), (1_000, "1K+"), (100, "100+"), (10, "10+")]:
        if count >= threshold:
            return label
    return str(count)


def registered_model_deletion_refusal(registered_model) -> str | None:
    """Why a registry model must stay: apps run on it (their model reference names it). The catalog registers
    this with the registry in CatalogConfig.ready(), so the registry never imports the catalog."""
    name = registered_model.name
    apps_on_it = StoreApp.objects.filter(Q(model_reference=name) | Q(model_reference__startswith=f"{name}@"))
    names = list(apps_on_it.values_list("name", flat=True)[:5])
    if names:
        return f"Apps run on this model ({', '.join(names)}): point them at another model first."
    return None

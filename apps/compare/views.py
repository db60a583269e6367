"""/compare/: two models or two apps answer one prompt side by side; the user votes; their leaderboard.

Thin: the page, a JSON start (`comparison_create`), one streamed run per side (the app pages' server-sent events:
static/js/compare.js reads them with the app runner's reader) and a JSON vote. Bad input is a JSON 4xx that the
page shows as a readable message.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.limits import client_address
from apps.catalog.builtin import LANGUAGES
from apps.catalog.models import StoreApp
from apps.catalog.selectors import builder_model_choices
from apps.chat.services import Caller
from apps.compare import selectors, services
from apps.compare.models import Comparison, Vote
from apps.core.errors import StoreError
from apps.core.page_json import error_response, json_body
from apps.core.streaming import sse_events, sse_response, streams_async


def _app_choices(user) -> list[tuple[str, list[tuple[str, str]]]]:
    """Apps the user may run, by kind: their own (drafts included), the built-ins and the store's public apps."""
    listed = Q(visibility=StoreApp.Visibility.PUBLIC, published_at__isnull=False, is_listed=True)
    apps = StoreApp.objects.filter(listed | Q(creator=user)).select_related("creator").order_by("kind", "-is_builtin", "name")[:300]
    groups = {kind: [] for kind, _label in StoreApp.Kind.choices}
    for app in apps:
        owner = app.creator.username if app.creator_id else None
        groups[app.kind].append((f"{services.APP_PREFIX}{app.address}", f"{app.name} ({owner})" if owner else app.name))
    return [(label, groups[kind]) for kind, label in StoreApp.Kind.choices if groups[kind]]


def _leaderboard_groups(user) -> list[tuple[str, list]]:
    rows = selectors.leaderboard(user=user)
    return [(label, [r for r in rows if r.kind == kind]) for kind, label in Comparison.Kind.choices
            if any(r.kind == kind for r in rows)]


def _comparison_json(comparison: Comparison) -> dict:
    return {
        "id": comparison.pk,
        "kind": comparison.kind,
        "voteUrl": reverse("compare:vote", args=[comparison.pk]),
        "answers": [{"side": a.side, "label": a.label, "settings": a.settings,
                     "runUrl": reverse("compare:run", args=[comparison.pk, a.side])} for a in comparison.answers.all()],
    }


@login_required
@require_GET
def compare(request):
    return render(request, "compare/compare.html", {
        "model_choices": builder_model_choices(user=request.user),
        "app_choices": _app_choices(request.user),
        "languages": LANGUAGES,
        "outcomes": Vote.Outcome.choices,
        "leaderboard": _leaderboard_groups(request.user),
        "config": {"startUrl": reverse("compare:start"), "kinds": dict(Comparison.Kind.choices)},
    })


@login_required
@require_GET
def leaderboard(request):
    return render(request, "compare/leaderboard.html", {
        "leaderboard": _leaderboard_groups(request.user),
        "votes": selectors.vote_list(user=request.user)[:20],
    })


@login_required
@require_POST
def comparison_start(request):
    try:
        body = json_body(request)
        comparison = services.comparison_create(
            user=request.user, a=body.get("a"), b=body.get("b"), prompt=body.get("prompt", ""), messages=body.get("messages"),
            temperature=body.get("temperature"), max_tokens=body.get("max_tokens"), target=body.get("target") or "")
    except StoreError as exc:
        return error_response(exc)
    return JsonResponse(_comparison_json(comparison), status=201)


@login_required
@require_POST
def answer_run(request, pk, side):
    """One side's answer, streamed as the app pages stream theirs."""
    try:
        comparison = selectors.access_comparison(user=request.user, comparison_id=pk)
        events = services.answer_run_start(caller=Caller(request.user, address=client_address(request.META)),
                                           comparison=comparison, side=side, stream_async=streams_async(request))
    except StoreError as exc:
        return error_response(exc)
    return sse_response(request, sse_events(events))


@login_required
@require_POST
def vote(request, pk):
    try:
        comparison = selectors.access_comparison(user=request.user, comparison_id=pk)
        cast = services.vote_cast(user=request.user, comparison=comparison, outcome=json_body(request).get("outcome"))
    except StoreError as exc:
        return error_response(exc)
    return JsonResponse({"vote": {"id": cast.pk, "outcome": cast.outcome},
                         "leaderboard": [vars(row) for row in selectors.leaderboard(user=request.user)]})

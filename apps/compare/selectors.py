"""Reads of comparisons, votes and the leaderboard: every one is the caller's own (another user's is a 404)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from apps.compare.models import Comparison, Vote
from apps.compare.rating import elo_standings
from apps.core.errors import NotFound


def access_comparison(*, user, comparison_id) -> Comparison:
    """The user's own comparison with this id; NotFound otherwise (no hint that another user's exists)."""
    comparison = None
    if user is not None and user.is_authenticated and str(comparison_id).isdigit():
        comparison = (Comparison.objects.filter(owner=user, pk=int(comparison_id))
                      .prefetch_related("answers").select_related("vote").first())
    if comparison is None:
        raise NotFound(_("This comparison does not exist."), code="comparison_not_found", param="comparison")
    return comparison


def comparison_list(*, user) -> QuerySet[Comparison]:
    return Comparison.objects.filter(owner=user).prefetch_related("answers").select_related("vote")


def vote_list(*, user) -> QuerySet[Vote]:
    return Vote.objects.filter(voter=user).select_related("comparison").prefetch_related("comparison__answers")


@dataclass
class LeaderboardRow:
    rank: int
    entry: str  # a model version (`<id>@v<N>`) or `app:<slug>`
    label: str
    kind: str  # the comparisons it took part in: "model" or an app kind; entries of one kind only meet each other
    rating: float
    wins: int
    losses: int
    ties: int
    votes: int


def leaderboard(*, user) -> list[LeaderboardRow]:
    """The Elo standings (apps/compare/rating.py) over the user's own votes, applied in the order they were cast,
    best first; rank counts within each kind (models and each kind of app never meet)."""
    votes = Vote.objects.filter(voter=user).order_by("created_at", "id").prefetch_related("comparison__answers")
    matches, labels, kinds = [], {}, {}
    for vote in votes:
        sides = {answer.side: answer for answer in vote.comparison.answers.all()}
        a, b = sides["a"], sides["b"]
        matches.append((a.entry, b.entry, vote.outcome))
        for answer in (a, b):
            labels[answer.entry] = answer.label  # the newest label (an app may have been renamed)
            kinds[answer.entry] = vote.comparison.kind
    rows, ranks = [], {}
    for standing in elo_standings(matches):
        kind = kinds[standing.entry]
        ranks[kind] = ranks.get(kind, 0) + 1
        rows.append(LeaderboardRow(rank=ranks[kind], entry=standing.entry, label=labels[standing.entry], kind=kind,
                                   rating=round(standing.rating, 1), wins=standing.wins, losses=standing.losses,
                                   ties=standing.ties, votes=standing.votes))
    return rows

"""Elo ratings from pairwise votes, computed as the arena leaderboards first did (LMSYS Chatbot Arena's online Elo).

Every entry starts at INITIAL. The votes are applied one after the other, **in the order they were cast**: for a
vote between `a` and `b`, the expected scores are `E_a = 1 / (1 + 10 ** ((R_b - R_a) / 400))` and `E_b = 1 - E_a`;
the actual score `S_a` is 1 for a win of `a`, 0 for a win of `b`, 0.5 for a tie, and 0.5 for "both are bad" (the
arena counts that one as a tie too); then `R_a += K * (S_a - E_a)` and `R_b += K * ((1 - S_a) - E_b)`. So a win
raises the winner and lowers the loser by the same amount, a tie between equal ratings changes nothing, and the
same votes in another order may give (slightly) other ratings: the newest votes weigh a little more, which is what
a leaderboard of models that change should do. Pure Python: no Django.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

INITIAL = 1000.0
K = 32.0  # the step: how far one vote moves two equal ratings (16 points each way)
SCALE = 400.0
BASE = 10.0

A, B, TIE, BOTH_BAD = "a", "b", "tie", "both_bad"
SCORE_OF_A = {A: 1.0, B: 0.0, TIE: 0.5, BOTH_BAD: 0.5}


@dataclass
class Standing:
    entry: str
    rating: float = INITIAL
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def votes(self) -> int:
        return self.wins + self.losses + self.ties


def expected_score(rating: float, other: float) -> float:
    """The chance that an entry rated `rating` beats one rated `other`, as Elo counts it."""
    return 1.0 / (1.0 + BASE ** ((other - rating) / SCALE))


def elo_standings(votes: Iterable[tuple[str, str, str]], *, k: float = K) -> list[Standing]:
    """The standings after `votes` ((entry a, entry b, outcome) in the order they were cast), best first
    (ties in rating by entry name, so the order is stable)."""
    table: dict[str, Standing] = {}
    for a, b, outcome in votes:
        if a == b:
            raise ValueError(f"a vote needs two entries, got {a!r} twice")
        score = SCORE_OF_A[outcome]  # a KeyError for an outcome that is not one of the four
        first, second = table.setdefault(a, Standing(a)), table.setdefault(b, Standing(b))
        expected = expected_score(first.rating, second.rating)
        first.rating += k * (score - expected)
        second.rating += k * ((1.0 - score) - (1.0 - expected))
        if score == 1.0:
            first.wins, second.losses = first.wins + 1, second.losses + 1
        elif score == 0.0:
            second.wins, first.losses = second.wins + 1, first.losses + 1
        else:
            first.ties, second.ties = first.ties + 1, second.ties + 1
    return sorted(table.values(), key=lambda s: (-s.rating, s.entry))

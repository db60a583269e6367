"""The Elo arithmetic of the leaderboard (apps/compare/rating.py), without a database."""

import pytest

from apps.compare.rating import INITIAL, K, elo_standings, expected_score


def ratings(votes):
    return {s.entry: s.rating for s in elo_standings(votes)}


def test_a_win_raises_the_winner_and_lowers_the_loser_by_the_same_amount():
    after = ratings([("x", "y", "a")])
    assert after["x"] == INITIAL + K / 2 and after["y"] == INITIAL - K / 2  # equal ratings: expected 0.5 each
    after = ratings([("x", "y", "b")])
    assert after["y"] > INITIAL > after["x"]
    assert after["x"] + after["y"] == 2 * INITIAL  # Elo moves points from one to the other, never makes them


@pytest.mark.parametrize("outcome", ["tie", "both_bad"])
def test_a_draw_between_equal_ratings_changes_nothing(outcome):
    standings = elo_standings([("x", "y", outcome)])
    assert [s.rating for s in standings] == [INITIAL, INITIAL]
    assert [(s.ties, s.wins, s.losses) for s in standings] == [(1, 0, 0), (1, 0, 0)]


def test_a_draw_moves_unequal_ratings_towards_each_other():
    after = ratings([("x", "y", "a"), ("x", "y", "tie")])
    once = ratings([("x", "y", "a")])
    assert once["x"] > after["x"] > INITIAL > after["y"] > once["y"]


def test_votes_count_in_the_order_they_were_cast():
    # As documented: applied one after the other, so the last votes weigh a little more.
    forward = ratings([("x", "y", "a"), ("x", "y", "b")])
    backward = ratings([("x", "y", "b"), ("x", "y", "a")])
    assert forward["y"] > forward["x"] and backward["x"] > backward["y"]
    # ... each step by the formula: first 1016/984, then y's win from behind earns more than 16.
    gain = K * (1 - expected_score(INITIAL - K / 2, INITIAL + K / 2))
    assert forward["y"] == pytest.approx(INITIAL - K / 2 + gain)
    assert gain > K / 2


def test_an_upset_moves_more_than_an_expected_win():
    strong = [("x", "y", "a")] * 5
    expected = ratings([*strong, ("x", "y", "a")])["x"] - ratings(strong)["x"]
    upset = ratings(strong)["x"] - ratings([*strong, ("x", "y", "b")])["x"]
    assert upset > K / 2 > expected > 0


def test_standings_are_ordered_best_first_with_counts():
    standings = elo_standings([("x", "y", "a"), ("z", "x", "a"), ("y", "z", "tie")])
    assert [s.rating for s in standings] == sorted((s.rating for s in standings), reverse=True)
    assert [s.entry for s in standings][0] == "z"  # beat x, who beat y; drew with y
    x = next(s for s in standings if s.entry == "x")
    assert (x.wins, x.losses, x.ties, x.votes) == (1, 1, 0, 2)


def test_bad_votes_are_refused():
    with pytest.raises(KeyError):
        elo_standings([("x", "y", "maybe")])
    with pytest.raises(ValueError):
        elo_standings([("x", "x", "a")])

"""Capacity draws on sum trees: what a draw picks, and that a kept tree is the tree built afresh."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lb_service.strategies import Candidate, PickContext
from lb_service.strategies.sampling import (
    CapacityTrees,
    capacity_trees,
    draw,
    sample_by_capacity,
)
from lb_service.sumtree import FANOUT, SumTree, tree_sum
from tests.factories import agent

_values = st.lists(st.floats(0.0, 1e6, allow_nan=False), max_size=1_100)


class FixedRandom(random.Random):
    """An rng whose ``random()`` returns the given values in turn, to aim at edges."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def _trusted(*capacities: float) -> list[Candidate]:
    return [
        Candidate(agent(f"a{n}"), 0, None, 1.0, capacity, True)
        for n, capacity in enumerate(capacities)
    ]


@given(_values, st.lists(st.tuples(st.integers(0, 1_099), st.floats(0.0, 1e6)), max_size=30))
def test_a_tree_kept_up_to_date_is_the_tree_built_afresh(
    values: list[float], changes: list[tuple[int, float]]
) -> None:
    """After any changes, every running sum of the kept tree equals the fresh tree's, to the bit."""
    tree = SumTree(values)
    for position, value in changes:
        if values:
            values[position % len(values)] = value
            tree[position % len(values)] = value

    fresh = SumTree(values)
    assert (tree.totals, tree.sums, tree.top_down) == (fresh.totals, fresh.sums, fresh.top_down)
    assert tree.total == tree_sum(values)


def test_small_sums_are_plain_sums_and_an_empty_tree_is_zero() -> None:
    """Up to FANOUT values the tree adds left to right; no value sums to 0."""
    values = [0.1 * n for n in range(FANOUT)]
    assert tree_sum(values) == sum(values)
    assert tree_sum([]) == 0.0
    assert (len(SumTree([1.0, 2.0, 3.0])), len(SumTree(values + values).sums)) == (3, 2)


def test_a_draw_lands_in_proportion_to_capacity() -> None:
    """One of [1, 3] is drawn a quarter and three quarters of the time."""
    rng = random.Random(5)
    counts = Counter(
        draw(capacity_trees(_trusted(1.0, 3.0), 1.0), 2, 1, rng)[0] for _ in range(4000)
    )

    assert counts[1] / 4000 == pytest.approx(0.75, abs=0.03)


def test_a_point_on_an_edge_goes_to_the_later_member() -> None:
    """As bisect_right on running sums: exactly at 1 of [1, 1, 2] is the second member."""
    trees = capacity_trees(_trusted(1.0, 1.0, 2.0), 1.0)

    assert draw(trees, 3, 1, FixedRandom(0.25)) == [1]
    assert draw(trees, 3, 1, FixedRandom(0.0)) == [0]
    assert draw(trees, 3, 1, FixedRandom(0.999999)) == [2]


def test_later_draws_skip_the_drawn_and_take_one_random_number_each() -> None:
    """With the last of [1, 1, 2] drawn, the next point is laid on the other two only."""
    trees = capacity_trees(_trusted(1.0, 1.0, 2.0), 1.0)

    # 0.75 x 4 = 3 lands on the last; then 0.6 x (4 - 2) = 1.2 is in the second.
    assert draw(trees, 3, 2, FixedRandom(0.75, 0.6)) == [2, 1]
    # 0.25 x 4 = 1 is the second; then 0.4 x 3 = 1.2 skips it (1..2) to 2.2, the last.
    assert draw(trees, 3, 2, FixedRandom(0.25, 0.4)) == [1, 2]
    rng = random.Random(9)
    for _ in range(200):
        first, second = draw(trees, 3, 2, rng)
        assert first != second


def test_untrusted_capacities_are_their_guesses_times_the_scale() -> None:
    """A guess of 1 at scale 3 weighs as much as a learned 3: each drawn half of the time."""
    candidates = [
        Candidate(agent("learned"), 0, None, 1.0, 3.0, True, prior=5.0),
        Candidate(agent("guessed"), 0, None, 1.0, 3.0, False, prior=1.0),
    ]
    trees = capacity_trees(candidates, scale=3.0)
    rng = random.Random(2)

    assert (trees.total, trees.capacity(0), trees.capacity(1)) == (6.0, 3.0, 3.0)
    counts = Counter(draw(trees, 2, 1, rng)[0] for _ in range(4000))
    assert counts[1] / 4000 == pytest.approx(0.5, abs=0.03)


@given(
    st.lists(st.floats(1e-3, 1e6), min_size=2, max_size=300),
    st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=3, max_size=3),
)
def test_a_cold_fleet_draws_exactly_as_its_credited_capacities(
    guesses: list[float], shares: list[float]
) -> None:
    """None trusted: guesses at the credit's scale (2) draw what the same capacities learned do.

    The draw descends the guessed tree with the point halved, which is exact only because
    the scale is a power of two; a learned tree of the doubled figures is the reference.
    """
    cold = capacity_trees(
        [
            Candidate(agent(f"a{n}"), 0, None, 1.0, 2.0 * guess, False, prior=guess)
            for n, guess in enumerate(guesses)
        ],
        scale=2.0,
    )
    warm = capacity_trees(_trusted(*(2.0 * guess for guess in guesses)), 1.0)
    count = min(3, len(guesses) - 1)

    assert draw(cold, len(guesses), count, FixedRandom(*shares)) == draw(
        warm, len(guesses), count, FixedRandom(*shares)
    )


def test_with_no_capacity_a_draw_is_uniform_among_those_left() -> None:
    """Every capacity 0: the draws are still distinct, and each takes one random number."""
    trees = CapacityTrees(SumTree([0.0] * 3), SumTree([0.0] * 3), 1.0)

    assert draw(trees, 3, 2, FixedRandom(0.5, 0.5)) == [1, 2]
    assert draw(trees, 3, 2, FixedRandom(0.0, 0.0)) == [0, 1]


def test_sampling_keeps_every_candidate_when_there_are_no_more_than_the_count() -> None:
    """choice_count 0, or no more candidates than it, compares them all and draws nothing."""
    candidates = _trusted(1.0, 2.0)
    rng = random.Random(1)
    state = rng.getstate()

    assert sample_by_capacity(candidates, PickContext(0, rng, choice_count=0)) is candidates
    assert sample_by_capacity(candidates, PickContext(0, rng, choice_count=2)) is candidates
    assert rng.getstate() == state

"""Weighted: a seeded random pick with probability weight / total; weight 0 never wins."""

from __future__ import annotations

import random
from collections import Counter

from lb_service.model import Task
from lb_service.strategies import Candidate, PickContext, Weighted
from tests.factories import agent


def weighted(**weights: float) -> list[Candidate]:
    """Idle, unmeasured candidates with the given weights, in keyword order."""
    return [Candidate(agent(agent_id), 0, None, w) for agent_id, w in weights.items()]


def picks(pool: list[Candidate], n: int, seed: int) -> list[str]:
    """The ids of ``n`` weighted picks from ``pool`` sharing one rng seeded with ``seed``."""
    rng = random.Random(seed)
    chosen = []
    for seq in range(n):
        choice = Weighted().choose(pool, Task(), PickContext(seq, rng))[0]
        assert choice is not None
        chosen.append(choice.agent.id)
    return chosen


class FixedRandom(random.Random):
    """An rng whose ``random()`` always returns one value, to aim at slot boundaries."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def pick_at(pool: list[Candidate], value: float) -> str:
    """The id chosen when the rng draws exactly ``value``."""
    choice = Weighted().choose(pool, Task(), PickContext(0, FixedRandom(value)))[0]
    assert choice is not None
    return choice.agent.id


def test_weight_zero_is_never_picked() -> None:
    """Over 2,000 seeded picks no zero-weight candidate is ever chosen, and both others are."""
    chosen = Counter(picks(weighted(zero1=0.0, one=1.0, zero2=0.0, two=2.0), 2_000, seed=11))
    assert set(chosen) == {"one", "two"}


def test_returns_none_when_every_weight_is_zero() -> None:
    """With every weight 0 the rule picks no candidate at all."""
    pool = weighted(a=0.0, b=0.0, c=0.0)
    assert Weighted().choose(pool, Task(), PickContext(0, random.Random(1)))[0] is None


def test_picks_in_proportion_to_weight() -> None:
    """Weights 1 and 3 give the heavy agent about 75% of 4,000 picks (uniform would be 50%)."""
    chosen = Counter(picks(weighted(light=1.0, heavy=3.0), 4_000, seed=2024))
    share = chosen["heavy"] / 4_000
    # Binomial sd is ~0.007 here, so +-0.03 is over 4 sd for a correct rule; 0.5 is far out.
    assert abs(share - 0.75) < 0.03


def test_pick_order_for_a_seed_is_pinned() -> None:
    """Seed 42 over weights a=1, b=0, c=2, d=5 yields exactly this pick sequence."""
    assert picks(weighted(a=1.0, b=0.0, c=2.0, d=5.0), 12, seed=42) == [
        "d", "a", "c", "c", "d", "d", "d", "a", "d", "a", "c", "d",
    ]  # fmt: skip


def test_draw_of_zero_skips_a_leading_zero_weight() -> None:
    """A draw of exactly 0.0 lands on the first positive weight, not a zero-weight one before it."""
    assert pick_at(weighted(zero=0.0, a=1.0, b=1.0), 0.0) == "a"


def test_draw_on_a_boundary_goes_to_the_next_slot() -> None:
    """A draw landing exactly on a cumulative boundary belongs to the following candidate."""
    # Weights 1 and 3: slots [0, 1) and [1, 4); a draw of 0.25 scales to exactly 1.0.
    assert pick_at(weighted(a=1.0, b=3.0), 0.25) == "b"


def test_highest_draw_stays_inside_the_last_positive_slot() -> None:
    """The largest possible draw picks the last positive-weight candidate, skipping zero tails."""
    largest_below_one = 1.0 - 2.0**-53
    assert pick_at(weighted(a=0.1, b=0.2, zero=0.0), largest_below_one) == "b"

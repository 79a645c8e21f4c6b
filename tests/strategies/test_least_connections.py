"""Least-connections: fewest active requests wins; ties rotate by sequence."""

from __future__ import annotations

import random

import pytest

from lb_service.model import Task
from lb_service.strategies import Candidate, LeastConnections, PickContext
from tests.factories import agent


def loaded(**active: int) -> list[Candidate]:
    """Candidates with the given active counts, in keyword order (unmeasured, weight 1)."""
    return [Candidate(agent(agent_id), n, None, 1.0) for agent_id, n in active.items()]


def pick(pool: list[Candidate], sequence: int = 0) -> str:
    """The id least-connections chooses from ``pool`` at ``sequence``."""
    choice = LeastConnections().choose(pool, Task(), PickContext(sequence, random.Random(0)))[0]
    assert choice is not None
    return choice.agent.id


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (loaded(a=0, b=3, c=5), "a"),
        (loaded(a=4, b=1, c=5), "b"),
        (loaded(a=4, b=3, c=2), "c"),
    ],
    ids=["first", "middle", "last"],
)
def test_fewest_active_wins_wherever_it_stands(pool: list[Candidate], expected: str) -> None:
    """The candidate with the fewest active requests is chosen whatever its position."""
    assert [pick(pool, seq) for seq in range(4)] == [expected] * 4


def test_ties_rotate_by_sequence_across_all_tied_agents() -> None:
    """Sequences 0, 1, 2 over three tied agents return three different agents, in order."""
    pool = loaded(a=2, b=2, c=2)
    assert [pick(pool, seq) for seq in range(3)] == ["a", "b", "c"]


def test_rotation_is_only_among_the_least_loaded() -> None:
    """Ties rotate over the least-loaded agents only, skipping busier ones between them."""
    pool = loaded(a=3, b=1, c=2, d=1)
    assert [pick(pool, seq) for seq in range(4)] == ["b", "d", "b", "d"]


def test_ignores_latency_and_weight() -> None:
    """Only active counts rank: a slow, zero-weight idle agent beats a fast busy one."""
    pool = [
        Candidate(agent("fast-busy"), 1, 1.0, 10.0),
        Candidate(agent("slow-idle"), 0, 5_000.0, 0.0),
    ]
    assert pick(pool) == "slow-idle"

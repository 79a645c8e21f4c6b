"""Round-robin: the candidate at position ``sequence % len(candidates)``."""

from __future__ import annotations

import random

import pytest

from lb_service.model import Task
from lb_service.strategies import Candidate, PickContext, RoundRobin
from tests.factories import agent


def candidates(*ids: str) -> list[Candidate]:
    """Idle, unmeasured candidates with weight 1, in the given order."""
    return [Candidate(agent(agent_id), 0, None, 1.0) for agent_id in ids]


def pick(pool: list[Candidate], sequence: int) -> str:
    """The id round-robin chooses from ``pool`` at ``sequence``."""
    choice = RoundRobin().choose(pool, Task(), PickContext(sequence, random.Random(0)))[0]
    assert choice is not None
    return choice.agent.id


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_n_picks_over_n_candidates_hit_each_once_in_order(n: int) -> None:
    """Sequences 0..N-1 over N candidates return each candidate exactly once, in list order."""
    ids = [f"agent-{i}" for i in range(n)]
    pool = candidates(*ids)
    assert [pick(pool, seq) for seq in range(n)] == ids


def test_wraps_around_after_the_last_candidate() -> None:
    """Sequence N returns the first candidate again and the cycle repeats."""
    pool = candidates("a", "b", "c")
    assert [pick(pool, seq) for seq in range(3, 9)] == ["a", "b", "c", "a", "b", "c"]


def test_large_sequence_uses_its_remainder() -> None:
    """A large sequence picks the candidate at ``sequence % len(candidates)``."""
    pool = candidates("a", "b", "c")
    assert pick(pool, 1_000_000_001) == "c"  # 1_000_000_001 % 3 == 2


def test_ignores_load_latency_and_weight() -> None:
    """Turn order alone decides: a busy, slow, zero-weight candidate still gets its turn."""
    pool = [
        Candidate(agent("idle"), 0, 5.0, 1.0),
        Candidate(agent("busy"), 50, 9_000.0, 0.0),
    ]
    assert [pick(pool, seq) for seq in range(2)] == ["idle", "busy"]

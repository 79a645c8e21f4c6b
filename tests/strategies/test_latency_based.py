"""Latency-based: unmeasured agents first, then the lowest average latency; ties rotate."""

from __future__ import annotations

import random

import pytest

from lb_service.model import Task
from lb_service.strategies import Candidate, LatencyBased, PickContext
from tests.factories import agent


def measured(**latency: float | None) -> list[Candidate]:
    """Idle candidates with the given average latencies (None = never measured), in order."""
    return [Candidate(agent(agent_id), 0, ms, 1.0) for agent_id, ms in latency.items()]


def pick(pool: list[Candidate], sequence: int = 0) -> str:
    """The id latency-based chooses from ``pool`` at ``sequence``."""
    choice = LatencyBased().choose(pool, Task(), PickContext(sequence, random.Random(0)))[0]
    assert choice is not None
    return choice.agent.id


@pytest.mark.parametrize(
    "pool",
    [
        measured(fast=0.0, new=None, slow=900.0),
        measured(fast=5.0, slow=900.0, new=None),
        measured(new=None, fast=0.5),
    ],
    ids=["middle", "last", "first"],
)
def test_unmeasured_agent_is_chosen_before_any_measured_one(pool: list[Candidate]) -> None:
    """An agent with no latency sample wins even against a measured average of 0 ms."""
    assert pick(pool) == "new"


@pytest.mark.parametrize(
    ("pool", "expected"),
    [
        (measured(a=120.0, b=80.5, c=300.0), "b"),
        (measured(a=10.0, b=10.5), "a"),
        (measured(a=2_000.0, b=1_999.0), "b"),
    ],
)
def test_lowest_average_latency_wins(pool: list[Candidate], expected: str) -> None:
    """Among measured agents the lowest average latency is chosen."""
    assert [pick(pool, seq) for seq in range(3)] == [expected] * 3


def test_ties_among_measured_agents_rotate() -> None:
    """Agents with equal lowest latency take turns by sequence; slower ones are skipped."""
    pool = measured(a=50.0, slow=70.0, b=50.0, c=50.0)
    assert [pick(pool, seq) for seq in range(4)] == ["a", "b", "c", "a"]


def test_ties_among_unmeasured_agents_rotate() -> None:
    """Several unmeasured agents take turns, so each one gets its first sample."""
    pool = measured(x=None, fast=1.0, y=None)
    assert [pick(pool, seq) for seq in range(3)] == ["x", "y", "x"]


def test_ignores_active_count() -> None:
    """Latency alone ranks: a busy fast agent beats an idle slow one."""
    pool = [
        Candidate(agent("idle-slow"), 0, 400.0, 1.0),
        Candidate(agent("busy-fast"), 9, 40.0, 1.0),
    ]
    assert pick(pool) == "busy-fast"

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


def peak_pick(pool: list[Candidate], now_ms: int) -> str:
    """The id latency-based picks by its peak-EWMA cost at ``now_ms`` (10 s time constant)."""
    ctx = PickContext(0, random.Random(0), peak_ewma=True, now_ms=now_ms, decay_ms=10_000.0)
    choice = LatencyBased().choose(pool, Task(), ctx)[0]
    assert choice is not None
    return choice.agent.id


def test_a_peaked_estimate_fades_with_time_towards_the_service_time() -> None:
    """One long request keeps an agent out only for a while: its estimate fades without new samples.

    Both agents serve at the same capacity (2 req/s on 1 slot: 500 ms a request); one
    sampled a 30 s request at t = 0, the other samples 800 ms requests all along. The
    first loses at once, and wins its turn back once its faded estimate (500 + 29,500 x
    e^(-t / 10 s)) drops under 800 ms.
    """

    def pool(now_ms: int) -> list[Candidate]:
        return [
            Candidate(agent("peaked"), 0, 30_000.0, 1.0, 2.0, True, 1.0, latency_at_ms=0),
            Candidate(agent("steady"), 0, 800.0, 1.0, 2.0, True, 1.0, latency_at_ms=now_ms),
        ]

    assert peak_pick(pool(1_000), now_ms=1_000) == "steady"
    assert peak_pick(pool(40_000), now_ms=40_000) == "steady"  # 500 + 29,500 x e^-4: 1,040 ms
    assert peak_pick(pool(60_000), now_ms=60_000) == "peaked"  # 500 + 29,500 x e^-6: 573 ms


def test_a_slow_agent_fades_towards_its_own_slow_service_time() -> None:
    """Fading never makes a slow host look fast: it ends at slots / capacity, not at zero."""
    pool = [
        Candidate(agent("slow-host"), 0, 9_000.0, 1.0, 0.2, True, 1.0, latency_at_ms=0),
        Candidate(agent("fast-busy"), 3, 900.0, 1.0, 2.0, True, 1.0, latency_at_ms=0),
    ]
    # Hours later the slow host still costs 1 / 0.2 req/s = 5 s; the fast one, with three
    # requests queued, (3 + 1) / 2 req/s = 2 s.
    assert peak_pick(pool, now_ms=3_600_000) == "fast-busy"

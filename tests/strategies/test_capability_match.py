"""Capability-match: smallest VRAM that fits, then fewest active; no GPU need: least-connections."""

from __future__ import annotations

import itertools
import random

import pytest

from lb_service.model import Task
from lb_service.strategies import Candidate, CapabilityMatch, LeastConnections, PickContext
from tests.factories import agent

#: A task that 16, 24 and 80 GB cards all satisfy.
TASK = Task(model="llama3:8b", min_vram_gb=12.0)


def gpu(agent_id: str, vram_gb: float, active: int = 0) -> Candidate:
    """A GPU candidate with the given VRAM and active count (unmeasured, weight 1)."""
    return Candidate(agent(agent_id, vram_gb=vram_gb, gpu="nvidia"), active, None, 1.0)


def pick(pool: list[Candidate], sequence: int = 0) -> str:
    """The id capability-match chooses from ``pool`` for ``TASK`` at ``sequence``."""
    choice = CapabilityMatch().choose(pool, TASK, PickContext(sequence, random.Random(0)))[0]
    assert choice is not None
    return choice.agent.id


@pytest.mark.parametrize(
    "pool",
    [
        list(order)
        for order in itertools.permutations(
            [gpu("h100", 80.0), gpu("rtx4090", 24.0), gpu("a4000", 16.0)]
        )
    ],
)
def test_smallest_vram_that_fits_wins_in_any_order(pool: list[Candidate]) -> None:
    """Of 80, 24 and 16 GB cards that all fit the task, the 16 GB card is chosen."""
    assert pick(pool) == "a4000"


def test_vram_outranks_active_count() -> None:
    """A busier small card still beats an idle big one: VRAM is the first key."""
    assert pick([gpu("big-idle", 80.0, active=0), gpu("small-busy", 16.0, active=7)]) == (
        "small-busy"
    )


def test_shorter_queue_breaks_equal_vram() -> None:
    """Among equal cards past their 4 slots the shorter queue wins; with slots free they tie."""
    pool = [gpu("a", 24.0, active=5), gpu("b", 24.0, active=4), gpu("c", 80.0, active=0)]
    assert [pick(pool, seq) for seq in range(3)] == ["b", "b", "b"]
    free = [gpu("a", 24.0, active=3), gpu("b", 24.0, active=1), gpu("c", 80.0, active=0)]
    assert [pick(free, seq) for seq in range(3)] == ["a", "b", "a"]


def test_ties_on_vram_and_active_rotate() -> None:
    """Cards equal on VRAM and active take turns by sequence, skipping worse-ranked ones."""
    pool = [gpu("a", 16.0), gpu("busy", 16.0, active=4), gpu("b", 16.0), gpu("big", 80.0)]
    assert [pick(pool, seq) for seq in range(4)] == ["a", "b", "a", "b"]


def test_a_task_needing_no_gpu_goes_to_the_shortest_expected_time_of_all() -> None:
    """With no VRAM or GPU need there is no fit: the pick is least-connections' full scan.

    Over an uneven pool (a CPU host with the least VRAM, 0 GB, among GPUs), whatever
    ``choice_count`` says, every agent is compared and the CPU host is never favoured
    for its VRAM: the 80 GB card with three requests on 8 req/s wins (0.5 s).
    """
    pool = [
        Candidate(agent("cpu", vram_gb=0.0), 0, None, 1.0, 0.25, True, 0.1),
        gpu("a10", 24.0, active=1)._replace(capacity=2.0, trusted=True),
        gpu("h100", 80.0, active=3)._replace(capacity=8.0, trusted=True),
        gpu("l4", 24.0)._replace(capacity=2.0, trusted=True),
    ]
    plain = Task(model="llama3:8b")
    picks = []
    for seed in range(200):
        ctx = PickContext(seed, random.Random(seed), choice_count=2)
        mine = CapabilityMatch().choose(pool, plain, ctx)[0]
        ctx = PickContext(seed, random.Random(seed), choice_count=0)
        theirs = LeastConnections().choose(pool, plain, ctx)[0]
        assert mine is not None
        assert theirs is not None
        assert mine.agent.id == theirs.agent.id
        picks.append(mine.agent.id)
    assert set(picks) == {"h100"}

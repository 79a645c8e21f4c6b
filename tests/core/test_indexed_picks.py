"""Picks through the store's index are exactly the picks a scan of the registry makes.

Two balancers live through the same random history of registrations, picks, leases,
weight and strategy changes: one over a MemoryStore (which picks through its index),
one over the same kind of store with the index hidden (so every pick scans and ranks
the registry with ``Strategy.choose``, the definition of each rule). Every answer,
refusal and load must agree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb_service.balancer import LoadBalancer
from lb_service.errors import LoadBalancerError
from lb_service.model import Compute, StrategyName, Task
from lb_service.store.base import PickState
from lb_service.store.memory import MemoryStore
from tests.factories import FakeClock, agent


class Unindexed:
    """A MemoryStore whose picks see no index."""

    def __init__(self) -> None:
        self._store = MemoryStore(epoch="test")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        state = await self._store.pick_state(session_id, candidate_ids)
        return dataclasses.replace(state, index=None)


IDS = ("a", "b", "c", "d", "e")
TASKS = (
    Task(),
    Task(model="llama3:70b"),
    Task(compute=Compute.GPU),
    Task(compute=Compute.CPU),
    Task(min_vram_gb=20.0),
    Task(model="llama3:70b", compute=Compute.GPU),
)

_agents = st.builds(
    lambda agent_id, big, vram, limit: agent(
        agent_id,
        vram_gb=vram,
        models=("llama3:8b", "llama3:70b") if big else ("llama3:8b",),
        max_connections=limit,
    ),
    st.sampled_from(IDS),
    st.booleans(),
    st.sampled_from((0.0, 16.0, 24.0, 80.0)),
    st.sampled_from((0, 0, 0, 0, 1, 2)),
)
_operations = st.one_of(
    st.tuples(st.just("register"), _agents),
    st.tuples(st.just("deregister"), st.sampled_from(IDS)),
    st.tuples(
        st.just("select"),
        st.sampled_from(TASKS),
        st.sampled_from(("", "s1", "s2")),
        st.booleans(),
    ),
    st.tuples(st.just("start"), st.sampled_from(IDS)),
    st.tuples(st.just("end"), st.integers(0, 5), st.floats(1.0, 500.0)),
    st.tuples(st.just("strategy"), st.sampled_from(list(StrategyName))),
    st.tuples(st.just("weight"), st.sampled_from(IDS), st.sampled_from((0.0, 1.0, 5.0))),
    st.tuples(st.just("sweep"), st.sampled_from((1.0, 700.0, 2000.0))),
)


async def _apply(lb: LoadBalancer, clock: FakeClock, leases: list[str], op: tuple[Any, ...]) -> Any:
    """Apply one operation; return what it answered, or the refusal it met."""
    try:
        match op:
            case ("register", new):
                return await lb.register(new)
            case ("deregister", agent_id):
                return await lb.deregister(agent_id)
            case ("select", task, session_id, acquire):
                picked = await lb.select(task, session_id=session_id, acquire=acquire)
                if picked.request_id:
                    leases.append(picked.request_id)
                return (picked.agent.id, picked.sticky, picked.request_id)
            case ("start", agent_id):
                leases.append(await lb.start(agent_id))
                return leases[-1]
            case ("end", which, latency):
                return await lb.end("", latency, leases[which % len(leases)] if leases else "x")
            case ("strategy", name):
                return await lb.set_strategy(name)
            case ("weight", agent_id, weight):
                return await lb.update_weights({agent_id: weight})
            case ("sweep", seconds):
                clock.advance(seconds)
                return await lb.sweep()
    except LoadBalancerError as error:
        return (type(error), str(error))
    raise AssertionError(op)


async def _both(operations: list[tuple[Any, ...]]) -> None:
    clocks = FakeClock(), FakeClock()
    indexed = LoadBalancer(MemoryStore(epoch="test"), clock=clocks[0], rng=random.Random(3))
    scanning = LoadBalancer(Unindexed(), clock=clocks[1], rng=random.Random(3))  # type: ignore[arg-type]
    leases: tuple[list[str], list[str]] = ([], [])
    for step, op in enumerate(operations):
        got = await _apply(indexed, clocks[0], leases[0], op)
        expected = await _apply(scanning, clocks[1], leases[1], op)
        assert got == expected, (step, op)
        assert await indexed.loads() == await scanning.loads(), (step, op)


@settings(max_examples=150, deadline=None)
@given(st.lists(_operations, max_size=60))
def test_indexed_picks_equal_scanned_picks(operations: list[tuple[Any, ...]]) -> None:
    """Over any history of operations, the indexed balancer answers as the scanning one does."""
    asyncio.run(_both(operations))


@pytest.mark.parametrize("limits", [(0, 0, 0, 0, 0), (0, 3, 0, 2, 0)], ids=["unlimited", "capped"])
def test_a_busy_fleet_under_every_strategy_picks_alike(limits: tuple[int, ...]) -> None:
    """Acquires, ends and plain picks over a mixed fleet choose alike through the index or not."""
    rng = random.Random(11)
    operations: list[tuple[Any, ...]] = [
        ("register", agent(agent_id, vram_gb=vram, max_connections=limit))
        for agent_id, vram, limit in zip(IDS, (0.0, 16.0, 16.0, 24.0, 80.0), limits, strict=True)
    ]
    for strategy in StrategyName:
        operations.append(("strategy", strategy))
        for _ in range(60):
            roll = rng.random()
            if roll < 0.4:
                operations.append(("select", rng.choice(TASKS), rng.choice(("", "s1")), True))
            elif roll < 0.7:
                operations.append(("end", rng.randrange(6), rng.uniform(1.0, 300.0)))
            else:
                operations.append(("select", rng.choice(TASKS), "", False))
    asyncio.run(_both(operations))

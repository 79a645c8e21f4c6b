"""The registry index: pools per task, kept in order and in step with the store."""

from __future__ import annotations

import random

import pytest

from lb_service.model import Task
from lb_service.store.index import AgentIndex
from lb_service.store.memory import MemoryStore
from lb_service.strategies import Candidate, PickContext, Weighted
from lb_service.strategies.base import rotate_lowest
from tests.factories import FEEDBACK, START_MS, agent


def _index(store: MemoryStore) -> AgentIndex:
    return store._index  # the store's own index, as pick_state hands it out


async def _store(*agents: object) -> MemoryStore:
    store = MemoryStore(epoch="test")
    for new in agents:
        await store.put_agent(new, START_MS)  # type: ignore[arg-type]
    return store


async def test_a_pool_holds_the_agents_meeting_the_task_in_registration_order() -> None:
    """pool(task) lists exactly the eligible agents, in the order they registered."""
    store = await _store(
        agent("c", vram_gb=24.0, models=("x", "y")), agent("a", models=("y",)), agent("b")
    )

    assert [a.id for a in _index(store).pool(Task(model="y")).agents] == ["c", "a"]
    assert [a.id for a in _index(store).pool(Task()).agents] == ["c", "a", "b"]
    assert len(_index(store).pool(Task(model="z"))) == 0


async def test_changes_drop_pools_but_an_unchanged_upsert_keeps_them() -> None:
    """A changed registry, weights or strategy rebuild pools; re-registering as-is does not."""
    a = agent("a")
    store = await _store(a, agent("b"))
    pool = _index(store).pool(Task())

    await store.put_agent(agent("a"), START_MS)  # equal to the registered one
    assert _index(store).pool(Task()) is pool

    for change in (
        store.put_agent(agent("a", port=8080), START_MS),
        store.delete_agent("b"),
        store.set_weights({"a": 2.0}),
        store.clear_weights(["a"]),
        store.set_strategy(store._strategy),
    ):
        await change
        assert _index(store).pool(Task()) is not pool
        pool = _index(store).pool(Task())
    assert [x.port for x in pool.agents] == [8080]


async def test_pools_beyond_the_limit_forget_the_oldest() -> None:
    """At most max_pools pools are kept; asking for one more drops the oldest."""
    index = AgentIndex({"a": agent("a")}, {}, {}, max_pools=2)
    first = index.pool(Task(min_vram_gb=0.0))
    index.pool(Task(min_vram_gb=0.5))
    index.pool(Task(min_vram_gb=1.0))

    assert index.pool(Task(min_vram_gb=0.0)) is not first


async def test_lowest_is_rotate_lowest_and_follows_load_changes() -> None:
    """lowest() picks what rotate_lowest picks, before and after leases open and close."""
    store = await _store(*(agent(i) for i in "abcd"))
    index = _index(store)

    def rank(c: Candidate) -> tuple[float, ...]:
        return (c.active,)

    def expected(sequence: int) -> str:
        stats = store._stats
        candidates = [Candidate(a, stats[a.id].active, None, 1.0) for a in store._agents.values()]
        return rotate_lowest(candidates, rank, sequence).agent.id

    for sequence in range(4):
        assert index.pool(Task()).lowest(rank, sequence).id == expected(sequence)
    opened = [await store.open_lease(i, START_MS) for i in "abb"]
    for sequence in range(4):
        assert (
            index.pool(Task()).lowest(rank, sequence).id
            == expected(sequence)
            == ["c", "d"][sequence % 2]
        )
    await store.expire_leases(START_MS + 1, START_MS + 1, FEEDBACK)
    assert [index.pool(Task()).lowest(rank, s).id for s in range(4)] == list("abcd")
    assert len(opened) == 3


async def test_full_counts_the_members_at_max_connections() -> None:
    """The full count follows leases opening and closing on limited agents, ignoring the rest."""
    store = await _store(agent("a", max_connections=1), agent("b"))
    pool = _index(store).pool(Task())
    assert pool.full == 0

    request_id = await store.open_lease("a", START_MS)
    await store.open_lease("b", START_MS)
    assert pool.full == 1

    await store.expire_leases(START_MS + 1, START_MS + 1, FEEDBACK)
    assert pool.full == 0
    assert request_id


async def test_cumulative_weights_skip_zero_weights_and_pick_as_weighted_does() -> None:
    """cumulative_weights holds the positive weights' running sum; picks equal Weighted.choose."""
    store = await _store(agent("a", vram_gb=16.0), agent("b"), agent("c", vram_gb=24.0))
    await store.set_weights({"b": 0.0})
    pool = _index(store).pool(Task())

    members, bounds = pool.cumulative_weights()

    assert ([a.id for a in members], bounds) == (["a", "c"], [16.0, 40.0])
    candidates = [
        Candidate(a, 0, None, w)
        for a, w in zip(store._agents.values(), (16.0, 0.0, 24.0), strict=True)
    ]
    for seed in range(20):
        by_index = Weighted().choose_indexed(pool, Task(), PickContext(0, random.Random(seed)))
        by_scan = Weighted().choose(candidates, Task(), PickContext(0, random.Random(seed)))
        assert by_scan is not None
        assert by_index == by_scan.agent


async def test_weighted_picks_none_when_every_member_weighs_zero() -> None:
    """With every weight at 0 there is nothing to pick, through the index as by scan."""
    store = await _store(agent("a"))
    await store.set_weights({"a": 0.0})

    pick = Weighted().choose_indexed(
        _index(store).pool(Task()), Task(), PickContext(0, random.Random(0))
    )

    assert pick is None


@pytest.mark.parametrize("agent_id", ["candidate", "a"])
async def test_load_changes_of_unindexed_ids_are_ignored(agent_id: str) -> None:
    """A lease on a candidate id (or with no pool built yet) changes no pool."""
    store = await _store(agent("a"))
    await store.open_lease(agent_id, START_MS)
    pool = _index(store).pool(Task(model="llama3:8b"))
    await store.open_lease("candidate", START_MS)

    assert pool.full == 0

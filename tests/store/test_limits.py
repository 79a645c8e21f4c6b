"""Limits hold in the store's atomic step: a refusal changes nothing; replicas cannot overshoot."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Sequence
from dataclasses import replace

import pytest

from lb_service.balancer import LoadBalancer
from lb_service.errors import LimitExceeded
from lb_service.store.base import Binding, Committed, Limit, Pick, Registered
from lb_service.store.redis import RedisStore
from lb_service.store.roles import Store
from tests.factories import BASE_RULES, FakeClock, agent
from tests.store.conftest import MakeStore

START_MS = 1_700_000_000_000


async def test_put_agent_refuses_a_new_id_at_max_agents_and_changes_nothing(store: Store) -> None:
    """At the limit a new id is refused, changing nothing; a known id may still be replaced.

    Each accepted put says whether it added, changed or left the agent as it was.
    """
    for agent_id in ("a", "b"):
        assert await store.put_agent(agent(agent_id), START_MS, max_agents=2) is Registered.ADDED
    version = store.version()
    assert await store.put_agent(agent("c"), START_MS, max_agents=2) is Limit.AGENTS
    assert list(await store.agents()) == ["a", "b"]
    assert store.version() == version
    replaced = await store.put_agent(agent("a", port=8080), START_MS, max_agents=2)
    assert replaced is Registered.CHANGED
    assert await store.put_agent(agent("a", port=8080), START_MS) is Registered.UNCHANGED
    assert (await store.agents())["a"].port == 8080


async def test_open_lease_refuses_at_max_leases_and_changes_nothing(store: Store) -> None:
    """The lease past the limit is not opened: no request id, no active count, no lease."""
    await store.put_agent(agent("a"), START_MS)
    assert await store.open_lease("a", START_MS, max_leases=2) == "test-1"
    assert await store.open_lease("a", START_MS, max_leases=2) == "test-2"
    assert await store.open_lease("a", START_MS, max_leases=2) is Limit.LEASES
    assert await store.lease_count() == 2
    assert (await store.stats())["a"].active == 2


async def test_commit_pick_refuses_a_lease_past_max_leases_and_records_nothing(
    store: Store,
) -> None:
    """An acquiring pick at the lease limit counts no selection and binds no session."""
    await store.put_agent(agent("a"), START_MS)
    await store.open_lease("a", START_MS)
    before = await store.counters()
    pick = Pick("a", START_MS, acquire=True, session_id="s", bind=True, max_leases=1)
    assert await store.commit_pick(pick) is Limit.LEASES
    assert await store.counters() == before
    assert await store.session_count() == 0
    assert await store.lease_count() == 1


async def test_commit_pick_refuses_a_new_session_past_max_sessions_but_rebinds_a_held_one(
    store: Store,
) -> None:
    """Only a session that holds no binding counts against the limit; a rebinding adds none."""
    for agent_id in ("a", "b"):
        await store.put_agent(agent(agent_id), START_MS)
    first = Pick("a", START_MS, session_id="s1", bind=True, max_sessions=1)
    assert await store.commit_pick(first) == Committed("a")
    second = Pick("a", START_MS, session_id="s2", bind=True, max_sessions=1)
    assert await store.commit_pick(second) is Limit.SESSIONS
    assert await store.session_count() == 1
    rebind = Pick(
        "b", START_MS + 1, session_id="s1", bind=True, max_sessions=1, seen=Binding("a", START_MS)
    )
    assert await store.commit_pick(rebind) == Committed("b")
    assert (await store.pick_state("s1")).binding == Binding("b", START_MS + 1)


def replicas(new_store: MakeStore, count: int, **limits: int) -> list[LoadBalancer]:
    """``count`` balancers, each over its own store from ``new_store`` (one shared state)."""
    rules = replace(BASE_RULES, **limits)  # type: ignore[arg-type]  # mypy checks every field; only int max_* are passed
    return [
        LoadBalancer(new_store(), rules, clock=FakeClock(), rng=random.Random(n))
        for n in range(count)
    ]


async def outcomes(calls: Sequence[Awaitable[object]]) -> tuple[int, int]:
    """How many of ``calls`` succeeded and how many were refused with LimitExceeded."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, LimitExceeded):
            raise result
    refused = sum(isinstance(result, LimitExceeded) for result in results)
    return len(results) - refused, refused


@pytest.fixture
def shared_stores(redis_url: str, redis_prefix: str, redis_stores: list[RedisStore]) -> MakeStore:
    """Redis stores on one prefix: the state several replicas share."""

    def make(epoch: str | None = None, *, fresh_prefix: bool = False) -> RedisStore:
        store = RedisStore(redis_url, prefix=redis_prefix, epoch=epoch)
        redis_stores.append(store)
        return store

    return make


async def test_max_agents_holds_across_replicas_registering_at_once(
    shared_stores: MakeStore,
) -> None:
    """Three replicas registering 24 new agents at once on a limit of 5: exactly 5 get in."""
    lbs = replicas(shared_stores, 3, max_agents=5)
    calls = [lbs[n % 3].register(agent(f"agent-{n}")) for n in range(24)]
    assert await outcomes(calls) == (5, 19)
    assert len(await lbs[0].agents()) == 5


async def test_max_leases_holds_across_replicas_starting_and_acquiring_at_once(
    shared_stores: MakeStore,
) -> None:
    """Three replicas opening 30 leases at once (starts, acquiring selects), limit 7: 7 open."""
    lbs = replicas(shared_stores, 3, max_leases=7)
    await lbs[0].register(agent("a"))
    await lbs[0].register(agent("b"))
    calls: list[Awaitable[object]] = []
    for n in range(30):
        lb = lbs[n % 3]
        calls.append(lb.start("a") if n % 2 else lb.select(acquire=True))
    assert await outcomes(calls) == (7, 23)
    assert await shared_stores().lease_count() == 7


async def test_max_sessions_holds_across_replicas_binding_at_once(
    shared_stores: MakeStore,
) -> None:
    """Three replicas binding 18 new sessions at once on a limit of 4: 4 bound, 14 refused."""
    lbs = replicas(shared_stores, 3, max_sessions=4)
    await lbs[0].register(agent("a"))
    calls = [lbs[n % 3].select(session_id=f"session-{n}") for n in range(18)]
    assert await outcomes(calls) == (4, 14)
    assert await lbs[1].session_count() == 4
    # A session already bound is still served at the limit, through any replica.
    view = shared_stores()
    bound = [f"session-{n}" for n in range(18) if (await view.pick_state(f"session-{n}")).binding]
    assert len(bound) == 4
    assert (await lbs[2].select(session_id=bound[0])).sticky

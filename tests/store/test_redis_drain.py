"""Drain across replicas sharing Redis: no lease on an agent once DrainAgent has returned."""

from __future__ import annotations

import asyncio
import random

from lb_service.balancer import LoadBalancer
from lb_service.model import AgentHealth, StrategyName
from lb_service.store.redis import RedisStore
from tests.factories import BASE_RULES, FakeClock, agent


async def test_concurrent_selects_through_two_replicas_never_lease_a_drained_agent(
    redis_url: str, redis_prefix: str, redis_stores: list[RedisStore]
) -> None:
    """Selections through two replicas racing a drain: none started after it leases the agent."""
    replicas = []
    for seed in (1, 2):
        store = RedisStore(redis_url, prefix=redis_prefix, epoch="test")
        redis_stores.append(store)
        replicas.append(LoadBalancer(store, BASE_RULES, clock=FakeClock(), rng=random.Random(seed)))
    one, other = replicas
    await one.set_strategy(StrategyName.LEAST_CONNECTIONS)
    for agent_id in ("a", "b", "c"):
        await one.register(agent(agent_id))
    drained, busy = asyncio.Event(), asyncio.Event()
    before: list[str] = []
    after: list[str] = []

    async def dispatcher(lb: LoadBalancer) -> None:
        # Picks until 30 picks in all started after the drain returned.
        while len(after) < 30:
            was_drained = drained.is_set()
            picked = await lb.select(acquire=True)
            (after if was_drained else before).append(picked.agent.id)
            if len(before) >= 12:
                busy.set()

    async def operator() -> None:
        await busy.wait()  # selections are in flight on both replicas
        await other.health.drain("a")
        drained.set()

    await asyncio.gather(*(dispatcher(lb) for lb in replicas for _ in range(3)), operator())

    assert "a" in before  # it took picks until the drain
    assert len(after) >= 30
    assert "a" not in after
    (load,) = await one.loads(["a"])
    assert load.health is AgentHealth.DRAINING

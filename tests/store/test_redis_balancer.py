"""The balancer over the Redis store picks exactly as over the memory store.

One scripted run (every strategy, task requirements, weights, capacity limits, sticky
sessions with spill-over and rebinding, caller-supplied candidates, lease ends,
ejection, lease expiry) is played against a memory store and a Redis store with the
same clock and seeded random source; every answer along the way must be identical.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import LoadBalancerError
from lb_service.model import Compute, StrategyName, Task
from lb_service.store.memory import MemoryStore
from lb_service.store.redis import RedisStore
from lb_service.store.roles import Store
from tests.factories import BASE_RULES, FakeClock, agent
from tests.store.conftest import EPOCH, drop_keys

SMALL = Task(model="llama3:8b")
LARGE = Task(model="llama3:70b")


class Run:
    """A balancer over one store, and the log of everything it answered."""

    def __init__(self, store: Store, config: BalancerConfig, seed: int) -> None:
        self.clock = FakeClock()
        self.lb = LoadBalancer(store, config, clock=self.clock, rng=random.Random(seed))
        self.log: list[object] = []
        self.leases: list[tuple[str, str]] = []

    async def select(self, task: Task | None = None, **options: Any) -> None:
        """Select, logging the agent, stickiness and lease (or the refusal)."""
        try:
            chosen = await self.lb.select(task, **options)
        except LoadBalancerError as refusal:
            self.log.append(type(refusal).__name__)
            return
        self.log.append((chosen.agent.id, chosen.sticky, chosen.request_id))
        if chosen.request_id:
            self.leases.append((chosen.agent.id, chosen.request_id))

    async def end_some(self, failed: bool = False) -> None:
        """End every other open lease, oldest first, with latencies that differ per agent."""
        keep = []
        for n, (agent_id, request_id) in enumerate(self.leases):
            if n % 2:
                keep.append((agent_id, request_id))
                continue
            latency = 20.0 + 7.5 * len(agent_id) + n
            await self.lb.end(agent_id, latency, request_id, failed=failed)
        self.leases = keep


async def play(run: Run) -> list[object]:
    """The scripted run; returns the log of every answer."""
    lb, clock = run.lb, run.clock
    await lb.register(agent("cpu-1", models=("llama3:8b",)))
    await lb.register(agent("gpu-16", vram_gb=16.0, gpu="A4000", models=("llama3:8b", "qwen:7b")))
    await lb.register(
        agent(
            "gpu-24",
            vram_gb=24.0,
            gpu="4090",
            models=("llama3:8b", "llama3:70b"),
            max_connections=2,
        )
    )
    await lb.register(agent("gpu-80", vram_gb=80.0, gpu="A100", models=("llama3:70b", "llama3:8b")))
    for strategy in StrategyName:
        run.log.append(await lb.set_strategy(strategy))
        for n in range(6):
            await run.select(SMALL, acquire=n % 2 == 0)
        await run.select(Task(min_vram_gb=20.0), acquire=True)
        await run.select(Task(compute=Compute.GPU))
        await run.select(Task(compute=Compute.CPU))
        await run.select(Task(model="missing"))
        for n in range(3):
            await run.select(SMALL, session_id=f"s-{strategy.value}", acquire=n == 0)
        await run.end_some()
        clock.advance(1)
    # Weights: weighted never picks a zero weight, and obeys the overrides.
    await lb.set_strategy(StrategyName.WEIGHTED)
    run.log.append(await lb.update_weights({"gpu-80": 0.0, "cpu-1": 3.0}))
    for _ in range(6):
        await run.select(SMALL)
    await lb.reset_weights(["gpu-80"])
    # Capacity: gpu-24 (limit 2) fills; its session spills over and comes back.
    await lb.set_strategy(StrategyName.CAPABILITY_MATCH)
    await run.select(LARGE, session_id="big", acquire=True)
    await run.select(LARGE, session_id="big", acquire=True)
    await run.select(LARGE, session_id="big", acquire=True)
    await run.select(Task(model="llama3:70b", min_vram_gb=20.0, compute=Compute.GPU), acquire=True)
    await run.end_some()
    await run.select(LARGE, session_id="big", acquire=True)
    # A session whose agent goes away, or cannot serve the next task, rebinds.
    await lb.set_strategy(StrategyName.LEAST_CONNECTIONS)
    await run.select(SMALL, session_id="moving")
    bound = run.log[-1]
    assert isinstance(bound, tuple)
    await lb.deregister(bound[0])
    await run.select(SMALL, session_id="moving")
    await run.select(SMALL, session_id="moving")
    await run.select(LARGE, session_id="moving")  # its new agent cannot serve 70b
    await run.select(SMALL, session_id="moving")
    await lb.register(agent(bound[0], models=("llama3:8b",)))
    # Caller-supplied candidates, picked and leased without registering them.
    pool = (agent("x-1"), agent("x-2", max_connections=1), agent("gpu-16", vram_gb=16.0))
    for n in range(4):
        await run.select(SMALL, candidates=pool, acquire=n < 2)
    for _ in range(2):  # the second finds its only candidate full
        await run.select(SMALL, candidates=(agent("x-3", max_connections=1),), acquire=True)
    # Latency-based, then failures until ejection, then expiry of leases and ejections.
    await lb.set_strategy(StrategyName.LATENCY_BASED)
    await run.end_some()
    for _ in range(4):
        await run.select(SMALL, acquire=True)
    for _ in range(5):
        await lb.end("cpu-1", 30.0, failed=True)
    for _ in range(4):
        await run.select(SMALL, acquire=True)
    clock.advance(lb.config.request_timeout_s + 1)
    run.log.append(await lb.sweep())
    run.log.append(await lb.loads())
    for _ in range(3):
        await run.select(SMALL)
    statistics = await lb.statistics()
    run.log.append(replace(statistics, selections_by_agent=dict(statistics.selections_by_agent)))
    run.log.append(await lb.session_count())
    return run.log


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A Redis store of this test's own prefix."""
    store = RedisStore(redis_url, prefix=redis_prefix, epoch=EPOCH)
    yield store
    await store.close()
    await drop_keys(redis_url, redis_prefix)


@pytest.mark.parametrize(
    "config",
    [BASE_RULES, BalancerConfig()],
    ids=["base-rules", "defaults-sampled-peak-ewma"],
)
async def test_redis_store_picks_as_the_memory_store(
    redis_store: RedisStore, config: BalancerConfig
) -> None:
    """Every selection, refusal, lease, load and counter matches the memory store's."""
    memory_log = await play(Run(MemoryStore(epoch=EPOCH), config, seed=11))
    redis_log = await play(Run(redis_store, config, seed=11))
    assert len(redis_log) == len(memory_log)
    for number, (mine, reference) in enumerate(zip(redis_log, memory_log, strict=True)):
        assert mine == reference, f"answer {number}"
    # The run exercised refusals, stickiness and leases, not only plain picks.
    assert {"NoEligibleAgent", "AllAgentsBusy"} <= {e for e in memory_log if isinstance(e, str)}
    assert any(isinstance(e, tuple) and e[1] for e in memory_log)

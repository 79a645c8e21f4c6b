"""Part 5, memory: bytes held per registered agent, per sticky session, per open lease.

Each figure is the growth of traced memory (``tracemalloc``) across the store
operations that create the records, divided by how many were created. What the
records are made from is allocated inside the traced region too (the Agent objects,
the session ids as a request would carry them), because the store keeps them.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bench.fleet import ANY_TASK, fleet
from lb_service.balancer import LoadBalancer
from lb_service.store.base import Pick
from lb_service.store.memory import MemoryStore

#: The issue's budget for each kind of record, in bytes.
BUDGET_BYTES = {"agent": 2048, "sticky session": 300, "open lease": 300}
#: A fixed time (unix ms) for every record, as one busy second would give them.
_NOW_MS = 1_700_000_000_000


@dataclass(frozen=True, slots=True)
class Footprint:
    """Bytes per record of one kind, measured over ``count`` records."""

    record: str
    count: int
    bytes_each: float

    @property
    def budget(self) -> int:
        """The issue's budget for this kind of record."""
        return BUDGET_BYTES[self.record]


def run(agents: int = 10_000, sessions: int = 100_000, leases: int = 100_000) -> list[Footprint]:
    """Measure the three footprints."""
    return asyncio.run(_measure(agents, sessions, leases))


async def _measure(agents: int, sessions: int, leases: int) -> list[Footprint]:
    registry = MemoryStore()

    async def register() -> None:
        for agent in fleet(agents):
            await registry.put_agent(agent, 0)
        # One pick builds the index the registry is picked through: it is part of the cost.
        await LoadBalancer(registry).select(ANY_TASK)

    store = MemoryStore()
    for agent in fleet(100):
        await store.put_agent(agent, 0)
    ids = [f"agent-{n % 100:05d}" for n in range(max(sessions, leases))]

    async def bind() -> None:
        for n in range(sessions):
            pick = Pick(ids[n], _NOW_MS, session_id=f"session-{n:07d}", bind=True)
            await store.commit_pick(pick)

    async def open_leases() -> None:
        for n in range(leases):
            await store.open_lease(ids[n], _NOW_MS)

    return [
        Footprint("agent", agents, await _traced(register, agents)),
        Footprint("sticky session", sessions, await _traced(bind, sessions)),
        Footprint("open lease", leases, await _traced(open_leases, leases)),
    ]


async def _traced(operation: Callable[[], Awaitable[None]], count: int) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await operation()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return (after - before) / count

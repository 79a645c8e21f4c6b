"""Part 1, core: the cost of one decision, calling the LoadBalancer directly on one event loop.

No gRPC, no protobuf: this is what the balancer itself costs, per strategy at its
defaults, as the registry grows. Decisions are made without ``acquire``, so the loads
the fleet was given stay put and every repeat measures the same state; request
tracking (start, end, and a pick with ``acquire`` plus its end) is measured apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.fleet import ANY_TASK, MODEL_TASK, load_fleet
from bench.timing import Budget, per_call_s
from lb_service.balancer import LoadBalancer, silent_logger
from lb_service.model import Selection, StrategyName, Task
from lb_service.store.base import PickState
from lb_service.store.memory import MemoryStore

#: Registry sizes the issue asks for.
SIZES = (10, 100, 1_000, 10_000)
#: The two task shapes: no requirement, and a model a tenth of the agents serve.
TASKS: dict[str, Task] = {"none": ANY_TASK, "model (1 in 10)": MODEL_TASK}


@dataclass(frozen=True, slots=True)
class Decision:
    """Median µs for one ``select`` of ``strategy`` at ``agents`` registered agents.

    ``scan_us`` is the same pick made without the store's index: the balancer filters
    and ranks the whole registry, which is what every pick did before the index. It is
    this part's same-run baseline.
    """

    agents: int
    strategy: StrategyName
    requirement: str
    us: float
    scan_us: float


@dataclass(frozen=True, slots=True)
class Tracking:
    """Median µs of one request-tracking operation at ``agents`` registered agents."""

    agents: int
    operation: str
    us: float


@dataclass(frozen=True, slots=True)
class CoreResults:
    """Everything part 1 measured."""

    decisions: tuple[Decision, ...]
    tracking: tuple[Tracking, ...]
    budget: Budget = field(default_factory=Budget)

    def us(self, agents: int, strategy: StrategyName, requirement: str) -> float:
        """The decision cost of one cell of the table."""
        return next(
            d.us
            for d in self.decisions
            if (d.agents, d.strategy, d.requirement) == (agents, strategy, requirement)
        )


def run(sizes: Sequence[int] = SIZES, budget: Budget | None = None) -> CoreResults:
    """Measure every strategy at every size, with and without a model requirement."""
    return asyncio.run(_measure(sizes, budget or Budget()))


class Unindexed:
    """A view of a MemoryStore whose picks see no index, so the balancer scans the registry."""

    def __init__(self, store: MemoryStore) -> None:
        """Share ``store``'s state; only ``pick_state`` differs."""
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """The store's snapshot without its index."""
        state = await self._store.pick_state(session_id, candidate_ids)
        return state._replace(pool=None)


async def _measure(sizes: Sequence[int], budget: Budget) -> CoreResults:
    decisions: list[Decision] = []
    tracking: list[Tracking] = []
    # The scan is slow at scale and only a reference: fewer repeats are enough.
    scan_budget = dataclasses.replace(budget, repeats=max(1, budget.repeats // 2))
    for size in sizes:
        store = MemoryStore()
        # Silent: registering 10,000 agents would print 10,000 lifecycle lines, which
        # are the server's job to log and not what this part measures.
        balancer = LoadBalancer(store, rng=random.Random(0), logger=silent_logger())
        scanning = LoadBalancer(Unindexed(store), rng=random.Random(0), logger=silent_logger())
        agents = await load_fleet(balancer, size)
        # Every cell is measured in each pass and keeps its best median: a burst of load
        # from a neighbour that spans one cell's repeats does not decide its figure.
        best: dict[tuple[StrategyName, str], float] = {}
        for _ in range(budget.passes):
            for strategy in StrategyName:
                await balancer.set_strategy(strategy)
                for requirement, task in TASKS.items():
                    us = 1e6 * await per_call_s(_selecting(balancer, task), budget)
                    best[strategy, requirement] = min(us, best.get((strategy, requirement), us))
        for strategy in StrategyName:
            await balancer.set_strategy(strategy)
            for requirement, task in TASKS.items():
                scan_us = 1e6 * await per_call_s(_selecting(scanning, task), scan_budget)
                us = best[strategy, requirement]
                decisions.append(Decision(size, strategy, requirement, us, scan_us))
        await balancer.set_strategy(StrategyName.LEAST_CONNECTIONS)
        tracking += await _tracking(balancer, agents[len(agents) // 2].id, size, budget)
    return CoreResults(tuple(decisions), tuple(tracking), budget)


def _selecting(balancer: LoadBalancer, task: Task) -> Callable[[], Awaitable[Selection]]:
    return lambda: balancer.select(task)


async def _tracking(
    balancer: LoadBalancer, agent_id: str, size: int, budget: Budget
) -> list[Tracking]:
    async def start_end() -> None:
        request_id = await balancer.start(agent_id)
        await balancer.end(agent_id, 120.0, request_id)

    async def acquire_end() -> None:
        selection = await balancer.select(ANY_TASK, acquire=True)
        await balancer.end(selection.agent.id, 120.0, selection.request_id)

    return [
        Tracking(
            size, "RecordRequestStart + RecordRequestEnd", 1e6 * await per_call_s(start_end, budget)
        ),
        Tracking(
            size,
            "SelectAgent(acquire) + RecordRequestEnd, least-connections",
            1e6 * await per_call_s(acquire_end, budget),
        ),
    ]

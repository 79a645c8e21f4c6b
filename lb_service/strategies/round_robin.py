"""Round-robin: rotate through the eligible agents in a stable order."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import Agent, StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, PickContext


class RoundRobin:
    """Each decision takes the next agent in turn, so N picks over N agents hit each once."""

    name = StrategyName.ROUND_ROBIN

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return the candidate whose turn it is."""
        return candidates[ctx.sequence % len(candidates)]

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return the member whose turn it is."""
        return pool.agent_at(ctx.sequence % len(pool))

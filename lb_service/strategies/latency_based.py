"""Latency-based: the agent with the lowest average latency, measuring new agents first."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import Agent, StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, PickContext, Rank, rotate_lowest


def _rank(candidate: Candidate) -> Rank:
    # Agents with no sample rank before all others so every agent gets measured;
    # otherwise a new agent would never be tried against a warm, fast one.
    if candidate.avg_latency_ms is None:
        return (0.0, 0.0)
    return (1.0, candidate.avg_latency_ms)


class LatencyBased:
    """Lowest moving-average latency wins; unmeasured agents first; ties rotate."""

    name = StrategyName.LATENCY_BASED

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return the fastest (or an unmeasured) candidate."""
        return rotate_lowest(candidates, _rank, ctx.sequence)

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return the fastest (or an unmeasured) member, from the pool kept sorted by latency."""
        return pool.lowest(_rank, ctx.sequence)

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


def _peak_ewma_rank(candidate: Candidate) -> Rank:
    # Finagle's cost: the estimate times the work already queued on the agent, so a
    # fast agent with ten requests waiting loses to a slightly slower idle one.
    active = candidate.active
    if candidate.avg_latency_ms is None:
        return (0.0, float(active))
    return (1.0, candidate.avg_latency_ms * (active + 1))


class LatencyBased:
    """Lowest latency cost wins; unmeasured agents first; ties rotate.

    The cost is the peak-EWMA estimate x (active + 1) when ``ctx.peak_ewma`` is set (the
    default; see ``lb_service.store.feedback``), else the plain moving average.
    """

    name = StrategyName.LATENCY_BASED

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return the cheapest (or an unmeasured) candidate."""
        return rotate_lowest(candidates, _peak_ewma_rank if ctx.peak_ewma else _rank, ctx.sequence)

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return the fastest (or an unmeasured) member, from the pool kept sorted by latency.

        The index ranks by the moving average only: the balancer ranks peak-EWMA
        candidates itself with ``choose`` and never asks for them here.
        """
        if ctx.peak_ewma:
            raise ValueError("the index keeps no peak-EWMA order; rank candidates with choose()")
        return pool.lowest(_rank, ctx.sequence)

"""Least-connections: the agent with the fewest active requests."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import Agent, StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, PickContext, Rank, rotate_lowest


def _rank(candidate: Candidate) -> Rank:
    return (candidate.active,)


class LeastConnections:
    """Fewest active requests wins; ties rotate so equal agents share the work.

    The default strategy: with uneven work (LLM requests vary by orders of magnitude
    in length) it follows the real load, where round-robin only counts turns.
    """

    name = StrategyName.LEAST_CONNECTIONS

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return the least busy candidate."""
        return rotate_lowest(candidates, _rank, ctx.sequence)

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return the least busy member, from the pool kept sorted by active count."""
        return pool.lowest(_rank, ctx.sequence)

"""Least-connections: the agent with the fewest active requests."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import Candidate, PickContext, rotate_lowest


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
        return rotate_lowest(candidates, lambda c: (c.active,), ctx.sequence)

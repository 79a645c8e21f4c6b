"""Round-robin: rotate through the eligible agents in a stable order."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import Candidate, LoadRank, PickContext


class RoundRobin:
    """Each decision takes the next agent in turn, so N picks over N agents hit each once."""

    name = StrategyName.ROUND_ROBIN

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Sequence[Candidate]]:
        """Return the candidate whose turn it is (the only one compared)."""
        choice = candidates[ctx.sequence % len(candidates)]
        return choice, (choice,)

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank | None:
        """None: the rule goes by turns, not load (a shared store commits the pick as made)."""
        return None

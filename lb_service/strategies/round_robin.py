"""Round-robin: rotate through the eligible agents in a stable order."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, LoadRank, PickContext, Ranked


class RoundRobin:
    """Each decision takes the next agent in turn, so N picks over N agents hit each once."""

    name = StrategyName.ROUND_ROBIN
    #: Not sampled.
    default_choice_count = 0

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """Return the candidate whose turn it is (none compared: turns do not rank by load)."""
        choice = candidates[ctx.sequence % len(candidates)]
        return choice, ()

    def choose_from_pool(
        self, pool: IndexedPool, task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """The member whose turn it is, in O(1)."""
        choice = pool.candidate(ctx.sequence % len(pool), ctx.peak_ewma)
        return choice, ()

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank | None:
        """None: the rule goes by turns, not load (a shared store commits the pick as made)."""
        return None

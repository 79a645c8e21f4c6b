"""Capability-match: the smallest agent that fits the task, keeping big GPUs free."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import Agent, StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, PickContext, Rank, rotate_lowest


def _rank(candidate: Candidate) -> Rank:
    return (candidate.agent.hardware.vram_gb, candidate.active)


class CapabilityMatch:
    """Ranks by VRAM (smallest that satisfies the task first), then fewest active requests.

    The requirements have already excluded agents that cannot run the task, so the
    smallest remaining VRAM is the tightest fit; an 80 GB GPU then stays free for the
    70B model that needs it instead of serving an 8B request a 16 GB card could take.
    """

    name = StrategyName.CAPABILITY_MATCH

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return the best-fitting candidate."""
        return rotate_lowest(candidates, _rank, ctx.sequence)

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return the best-fitting member, from the pool kept sorted by (VRAM, active)."""
        return pool.lowest(_rank, ctx.sequence)

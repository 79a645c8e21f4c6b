"""Least-connections: the agent with the lowest load relative to its capacity."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import (
    Candidate,
    LoadRank,
    PickContext,
    lowest_by_load,
    sample_by_capacity,
)


def _rank(candidate: Candidate) -> LoadRank:
    # (active + 1) / capacity: a 4-slot GPU holding 3 requests beats an idle CPU host.
    return LoadRank(0.0, 1.0 / candidate.capacity)


class LeastConnections:
    """Lowest relative load among ``choice_count`` drawn by capacity (all when 0); ties rotate.

    The default strategy: LLM requests vary by orders of magnitude in length, so the
    agent's open requests follow its real load where turns do not; weighing them by
    capacity (``lb_service.capacity``) makes one request on a one-slot CPU host count
    as the full load it is.
    """

    name = StrategyName.LEAST_CONNECTIONS

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Sequence[Candidate]]:
        """Return the least loaded of the drawn candidates, and the drawn ones."""
        drawn = sample_by_capacity(candidates, ctx.choice_count, ctx.rng)
        return lowest_by_load(drawn, _rank, ctx.sequence), drawn

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank:
        """``(active + 1) / capacity``."""
        return _rank(candidate)

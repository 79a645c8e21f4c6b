"""Least-connections: the agent whose open requests, weighed by its capacity, clear soonest."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import (
    Candidate,
    IndexedPool,
    LoadRank,
    PickContext,
    Ranked,
    expected_time_rank,
    lowest_by_load,
)
from lb_service.strategies.sampling import sample_by_capacity, sample_pool

_rank = expected_time_rank


class LeastConnections:
    """Shortest expected time over every candidate, or ``choice_count`` drawn; ties rotate.

    The default strategy: LLM requests vary by orders of magnitude in length, so the
    agent's open requests follow its real load where turns do not. Weighing them by
    capacity and the task's model (``base.expected_time_rank``) makes one request on a
    one-slot CPU host the full load it is, a 4-slot GPU holding three requests still
    the faster choice (its free slot serves at once), and a host quick only at another
    model no shortcut.
    """

    name = StrategyName.LEAST_CONNECTIONS
    #: Every eligible agent: exact while loads are live (pending picks keep them so when
    #: starts are reported late), O(log n) from the index.
    default_choice_count = 0

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """Return the drawn candidate expected to finish a new request first, and the drawn ones."""
        drawn = sample_by_capacity(candidates, ctx)
        return lowest_by_load(drawn, _rank, ctx.sequence)

    def choose_from_pool(
        self, pool: IndexedPool, task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """``choose`` over the pool's members in O(log n).

        Drawn from its capacity trees, or, to compare them all, the least expected time
        the pool keeps (``IndexedPool.least_expected_time``).
        """
        if ctx.choice_count <= 0 or len(pool) <= ctx.choice_count:
            return pool.least_expected_time(ctx.sequence)
        drawn = sample_pool(pool, ctx)
        return lowest_by_load(drawn, _rank, ctx.sequence)

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank:
        """``(active + 1) / capacity``."""
        return _rank(candidate)

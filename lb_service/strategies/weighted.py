"""Weighted: a random pick in proportion to each agent's weight."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, LoadRank, PickContext, Ranked


class Weighted:
    """Picks at random with probability weight / total; weight 0 is never picked.

    A fixed split: it does not look at load, so under load an agent gets its share
    whether or not it keeps up (see the README on what that does to an uneven fleet).
    """

    name = StrategyName.WEIGHTED
    #: Not sampled.
    default_choice_count = 0

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """Return a weight-proportional random candidate (None if all weigh 0)."""
        pool = [c for c in candidates if c.weight > 0]
        if not pool:
            return None, ()
        choice = pool[_draw(list(itertools.accumulate(c.weight for c in pool)), ctx)]
        return choice, ()

    def choose_from_pool(
        self, pool: IndexedPool, task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """``choose`` from the pool's running weight sums (kept until a weight changes)."""
        positions, bounds = pool.weight_bounds()
        if not positions:
            return None, ()
        choice = pool.candidate(positions[_draw(bounds, ctx)], ctx.peak_ewma)
        return choice, ()

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank | None:
        """None: the rule goes by weights, not load (a shared store commits the pick as made)."""
        return None


def _draw(bounds: Sequence[float], ctx: PickContext) -> int:
    """The index of the slot a random point on the running weight sums lands in."""
    point = ctx.rng.random() * bounds[-1]
    # bisect_right keeps a point that lands exactly on a boundary inside a
    # positive-weight slot; min() guards float rounding at the very top.
    return min(bisect.bisect_right(bounds, point), len(bounds) - 1)

"""Weighted: a random pick in proportion to each agent's weight."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Sequence

from lb_service.model import Agent, StrategyName, Task
from lb_service.strategies.base import Candidate, IndexedPool, PickContext


class Weighted:
    """Picks at random with probability weight / total; weight 0 is never picked."""

    name = StrategyName.WEIGHTED

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return a weight-proportional random candidate, or None if all weigh 0."""
        pool = [c for c in candidates if c.weight > 0]
        if not pool:
            return None
        bounds = list(itertools.accumulate(c.weight for c in pool))
        return pool[_slot(bounds, ctx.rng)]

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return a weight-proportional random member, from the pool's running weight sums."""
        members, bounds = pool.cumulative_weights()
        if not members:
            return None
        return members[_slot(bounds, ctx.rng)]


def _slot(bounds: Sequence[float], rng: random.Random) -> int:
    """The position a random point in [0, total weight) falls in, given running sums."""
    point = rng.random() * bounds[-1]
    # bisect_right keeps a point that lands exactly on a boundary inside a
    # positive-weight slot; min() guards float rounding at the very top.
    return min(bisect.bisect_right(bounds, point), len(bounds) - 1)

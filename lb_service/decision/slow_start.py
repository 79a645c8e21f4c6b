"""Slow start: a warming agent keeps a pick only with its share's probability."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from lb_service.store.base import AgentStats
from lb_service.store.feedback import slow_start_share
from lb_service.strategies import Candidate

_NO_STATS = AgentStats()


def ramp(
    chosen: Candidate,
    compared: Sequence[Candidate],
    stats: Mapping[str, AgentStats],
    now_ms: int,
    window_ms: float,
    min_share: float,
    rng: random.Random,
) -> Sequence[Candidate]:
    """The candidates to choose again among, or ``()`` when the warming agent keeps its pick.

    A warming agent (``feedback.slow_start_share`` below 1) keeps the pick with that
    probability; otherwise the strategy chooses again among the others, which then
    become the compared candidates.
    """
    share = slow_start_share(stats.get(chosen.agent.id, _NO_STATS), now_ms, window_ms, min_share)
    if share >= 1.0 or rng.random() < share:
        return ()
    return [c for c in compared if c is not chosen]

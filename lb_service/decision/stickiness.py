"""Stickiness with bounded loads: a session's agent answers while it holds at most its share."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.capacity import within_bound
from lb_service.strategies import Candidate


def keeps(bound: Candidate, pool: Sequence[Candidate], factor: float) -> bool:
    """Whether the session's agent takes this request (else it spills over, keeping the binding).

    ``pool`` is every available agent that meets the task: the agent takes the request
    while, with it, it holds at most ``factor`` x its capacity share of the pool's open
    requests (``capacity.within_bound``). An unbounded binding keeps feeding a slow host
    for as long as the session lasts; a bound relative to the best alternative would
    move sessions at every fluctuation.
    """
    total_active = sum(c.active for c in pool)
    total_capacity = sum(c.capacity for c in pool)
    return within_bound(bound.active, bound.capacity, total_active, total_capacity, factor)

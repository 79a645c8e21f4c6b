"""Stickiness with bounded loads: a session's agent answers while it holds at most its share."""

from __future__ import annotations

from lb_service.capacity import within_bound
from lb_service.strategies import Candidate


def keeps(bound: Candidate, total_active: int, total_capacity: float, factor: float) -> bool:
    """Whether the session's agent takes this request (else it spills over, keeping the binding).

    The totals are over every available agent that meets the task (the capacities as
    ``strategies.sampling.CapacityTrees`` adds them up): the agent takes the request
    while, with it, it holds at most ``factor`` x its capacity share of the pool's open
    requests (``capacity.within_bound``). An unbounded binding keeps feeding a slow host
    for as long as the session lasts; a bound relative to the best alternative would
    move sessions at every fluctuation.
    """
    return within_bound(bound.active, bound.capacity, total_active, total_capacity, factor)

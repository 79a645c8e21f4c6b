"""Candidates: the agents of one decision with the figures strategies rank by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.capacity import hardware_capacity, ranked_capacity, ranked_slots, scale
from lb_service.model import Agent
from lb_service.model_cost import service_factor
from lb_service.store.base import AgentStats
from lb_service.strategies import Candidate

_NO_STATS = AgentStats()


def build(
    agents: Sequence[Agent],
    stats: Mapping[str, AgentStats],
    weights: Mapping[str, float],
    peak_ewma: bool,
    model: str = "",
) -> tuple[list[Candidate], float]:
    """One candidate per agent, with capacities in one unit, and the scale that took.

    Capacities are ``capacity.resolve``'s: learned where trusted (credited with their
    uncertainty, ``capacity.ranked_capacity``), else the hardware
    guess times ``capacity.scale``. ``avg_latency_ms`` holds the peak-EWMA estimate
    when ``peak_ewma`` is set, else the moving average. ``store.pool.Pool.candidate``
    builds the same candidates from its own figures.
    """
    records = [stats.get(agent.id, _NO_STATS) for agent in agents]
    learned = [ranked_capacity(record) for record in records]
    priors = [hardware_capacity(agent) for agent in agents]
    factor = scale(priors, learned)
    candidates = [
        Candidate(
            agent,
            record.in_flight,
            record.cost_ms if peak_ewma else record.avg_latency_ms,
            weights.get(agent.id, agent.default_weight),
            prior * factor if figure is None else figure,
            figure is not None,
            prior,
            record.cost_at_ms,
            service_factor(record, model),
            ranked_slots(agent, record, figure is not None),
        )
        for agent, record, figure, prior in zip(agents, records, learned, priors, strict=True)
    ]
    return candidates, factor

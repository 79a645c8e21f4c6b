"""Candidates: the agents of one decision with the figures strategies rank by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.capacity import hardware_capacity, ranked_rate, ranked_slots, scale
from lb_service.model import Agent
from lb_service.model_cost import factor_of
from lb_service.peers import informed_figures
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
    uncertainty, ``capacity.ranked_capacity``), else the hardware guess times
    ``capacity.scale``. Learned figures and model costs are read with the prior of the
    agent's peers among ``agents`` (``lb_service.peers``). ``avg_latency_ms`` holds the
    peak-EWMA estimate when ``peak_ewma`` is set, else the moving average.
    ``store.pool.Pool.candidate`` builds the same candidates from its own figures.
    """
    records = [stats.get(agent.id, _NO_STATS) for agent in agents]
    read = informed_figures(agents, records)
    learned = [ranked_rate(*figures[:3]) for figures in read]
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
            factor_of(figures[3], model),
            ranked_slots(agent, record, figure is not None),
        )
        for agent, record, figures, figure, prior in zip(
            agents, records, read, learned, priors, strict=True
        )
    ]
    return candidates, factor

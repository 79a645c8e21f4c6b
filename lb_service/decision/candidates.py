"""Candidates: the agents of one decision with the figures strategies rank by."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.capacity import hardware_capacity, learned_capacity, resolve
from lb_service.model import Agent
from lb_service.store.base import AgentStats
from lb_service.strategies import Candidate

_NO_STATS = AgentStats()


def build(
    agents: Sequence[Agent],
    stats: Mapping[str, AgentStats],
    weights: Mapping[str, float],
    peak_ewma: bool,
) -> list[Candidate]:
    """One candidate per agent, with capacities in one unit (``capacity.resolve``).

    ``avg_latency_ms`` holds the peak-EWMA estimate when ``peak_ewma`` is set, else the
    moving average.
    """
    records = [stats.get(agent.id, _NO_STATS) for agent in agents]
    learned = [learned_capacity(record) for record in records]
    capacities = resolve([hardware_capacity(agent) for agent in agents], learned)
    return [
        Candidate(
            agent,
            record.active,
            record.cost_ms if peak_ewma else record.avg_latency_ms,
            weights.get(agent.id, agent.default_weight),
            capacity,
            figure is not None,
        )
        for agent, record, figure, capacity in zip(
            agents, records, learned, capacities, strict=True
        )
    ]

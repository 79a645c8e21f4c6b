"""Selection strategies: one module per rule, looked up by name."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lb_service.model import StrategyName
from lb_service.strategies.base import Candidate, IndexedPool, LoadRank, PickContext, Strategy
from lb_service.strategies.capability_match import CapabilityMatch
from lb_service.strategies.latency_based import LatencyBased
from lb_service.strategies.least_connections import LeastConnections
from lb_service.strategies.round_robin import RoundRobin
from lb_service.strategies.weighted import Weighted

__all__ = [
    "STRATEGIES",
    "Candidate",
    "CapabilityMatch",
    "IndexedPool",
    "LatencyBased",
    "LeastConnections",
    "LoadRank",
    "PickContext",
    "RoundRobin",
    "Strategy",
    "Weighted",
]

#: Every strategy by name. Strategies are stateless, so one instance serves all picks.
STRATEGIES: Mapping[StrategyName, Strategy] = MappingProxyType(
    {
        s.name: s
        for s in (RoundRobin(), LeastConnections(), Weighted(), LatencyBased(), CapabilityMatch())
    }
)

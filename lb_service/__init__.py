"""lb-service: a gRPC control plane that picks which agent takes each request.

The names below are the public Python surface of the core; everything else is an
implementation module that may change. The gRPC API is ``protos/lb/v1``.
"""

from __future__ import annotations

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import (
    AgentNotFound,
    AllAgentsBusy,
    AllAgentsDraining,
    AllAgentsSaturated,
    InvalidArgument,
    LeaseNotFound,
    LimitExceeded,
    LoadBalancerError,
    NoAgentAvailable,
    NoAgentsRegistered,
    NoEligibleAgent,
    NotFound,
    StoreUnavailable,
)
from lb_service.health.monitor import HealthMonitor
from lb_service.health.result import ProbeResult
from lb_service.health.scheduler import ProbeScheduler
from lb_service.model import (
    Agent,
    AgentHealth,
    AgentLoad,
    Compute,
    Engine,
    Hardware,
    LoadReport,
    LoadSnapshot,
    Selection,
    SelectionRequest,
    Statistics,
    StrategyName,
    Task,
)
from lb_service.store import MemoryStore, Store

__all__ = [
    "Agent",
    "AgentHealth",
    "AgentLoad",
    "AgentNotFound",
    "AllAgentsBusy",
    "AllAgentsDraining",
    "AllAgentsSaturated",
    "BalancerConfig",
    "Compute",
    "Engine",
    "Hardware",
    "HealthMonitor",
    "InvalidArgument",
    "LeaseNotFound",
    "LimitExceeded",
    "LoadBalancer",
    "LoadBalancerError",
    "LoadReport",
    "LoadSnapshot",
    "MemoryStore",
    "NoAgentAvailable",
    "NoAgentsRegistered",
    "NoEligibleAgent",
    "NotFound",
    "ProbeResult",
    "ProbeScheduler",
    "Selection",
    "SelectionRequest",
    "Statistics",
    "Store",
    "StoreUnavailable",
    "StrategyName",
    "Task",
]

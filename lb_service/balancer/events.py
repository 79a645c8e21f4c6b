"""What a balancer tells the world: its log, its outcomes, the observer that counts them.

Every change in an agent's life is logged by the balancer, one line with its ids,
whoever caused it (an RPC, a config reload, the sweep): registered, deregistered,
ejected, returned, a lease expired. Counting is left to an ``Observer`` (the metrics).
A refusal is a value inside the decision and becomes an error only here, at the edge.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from lb_service.decision import Refusal, RefusalKind
from lb_service.errors import (
    AllAgentsBusy,
    AllAgentsDraining,
    AllAgentsSaturated,
    NoAgentAvailable,
    NoAgentsRegistered,
    NoEligibleAgent,
)
from lb_service.health.monitor import HealthObserver, NoHealthObserver
from lb_service.model import StrategyName

#: Returns the current time as unix milliseconds.
Clock = Callable[[], int]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger("lb_service.balancer")


def silent_logger() -> structlog.typing.FilteringBoundLogger:
    """A logger that writes nothing: for a balancer whose events nobody reads (the simulator)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[]
    )
    return logger


def system_clock() -> int:
    """Wall-clock time in unix milliseconds."""
    return time.time_ns() // 1_000_000


class Outcome(enum.Enum):
    """How a selection ended, as observers see it."""

    SELECTED = "selected"
    STICKY = "sticky"
    NO_AGENTS = "no_agents"
    NO_ELIGIBLE_AGENT = "no_eligible_agent"
    ALL_BUSY = "all_busy"
    ALL_DRAINING = "all_draining"
    ALL_SATURATED = "all_saturated"


REFUSALS: tuple[tuple[type[NoAgentAvailable], Outcome], ...] = (
    (NoAgentsRegistered, Outcome.NO_AGENTS),
    (AllAgentsBusy, Outcome.ALL_BUSY),
    (AllAgentsDraining, Outcome.ALL_DRAINING),
    (AllAgentsSaturated, Outcome.ALL_SATURATED),
    (NoAgentAvailable, Outcome.NO_ELIGIBLE_AGENT),
)


def refusal_error(refusal: Refusal) -> NoAgentAvailable:
    """The error a refusal is raised as, at the edge."""
    if refusal.kind is RefusalKind.NO_AGENTS:
        return NoAgentsRegistered()
    if refusal.kind is RefusalKind.ALL_BUSY:
        return AllAgentsBusy(refusal.message)
    if refusal.kind is RefusalKind.ALL_SATURATED:
        return AllAgentsSaturated(refusal.message)
    if refusal.kind is RefusalKind.ALL_DRAINING:
        return AllAgentsDraining(refusal.message)
    return NoEligibleAgent(refusal.message)


class Observer(HealthObserver, Protocol):
    """Receives events worth counting (metrics), without the core knowing who listens."""

    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        """A selection ended with this outcome under this strategy."""

    def request_ended(self, agent_id: str, latency_ms: float, failed: bool) -> None:
        """A request end was recorded for the agent (not a repeated one)."""

    def lease_expired(self, agent_id: str) -> None:
        """The sweep expired one of the agent's leases (a failed request)."""

    def agent_ejected(self, agent_id: str) -> None:
        """Outlier ejection took the agent out."""

    def agent_registered(self, agent_id: str) -> None:
        """An agent not registered until now was added to the registry."""

    def agent_deregistered(self, agent_id: str) -> None:
        """The agent was removed from the registry."""


class NoObserver(NoHealthObserver):
    """The observer of a balancer nobody counts for: every event is dropped."""

    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        """Dropped."""

    def request_ended(self, agent_id: str, latency_ms: float, failed: bool) -> None:
        """Dropped."""

    def lease_expired(self, agent_id: str) -> None:
        """Dropped."""

    def agent_ejected(self, agent_id: str) -> None:
        """Dropped."""

    def agent_registered(self, agent_id: str) -> None:
        """Dropped."""

"""What one policy's run records: every request's fate, load over time, and ejections.

The event loop (``loop``) fills a ``PolicyRun`` as it goes; ``lb_service/simulate/metrics.py``
summarises it, and the report and plots read it. Nothing here computes anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lb_service.balancer import BalancerConfig
from lb_service.simulate.policies import PolicySpec
from lb_service.simulate.scenario import Fault


@dataclass(slots=True)
class EjectionWatch:
    """What happened to an agent after a ``fail`` fault began, under one policy."""

    fault: Fault
    #: Failed ends reported to the balancer from the fault's start until it ejected the
    #: agent (the one that ejected it included), or until the end of the run.
    failures_before_ejection: int = 0
    #: Requests sent to the agent before it was ejected that failed: those sent after the
    #: fault began and those queued before it that only started service after.
    sent_before_ejection: int = 0
    #: Simulated seconds from the fault's start to the ejection; None if never ejected.
    ejected_after_s: float | None = None


@dataclass(slots=True)
class PolicyRun:
    """Everything one policy did, per request and over time; ``metrics`` summarises it."""

    policy: PolicySpec
    config: BalancerConfig | None
    agent_ids: tuple[str, ...]
    #: Per request: the agent's index, or -1 when refused.
    agent: list[int]
    start_ms: list[float]
    finish_ms: list[float]
    failed: list[bool]
    refused: Counter[str] = field(default_factory=Counter)
    #: Load over time: sample times (s) and, per sample, requests in each agent (queued
    #: or in service).
    sample_s: list[float] = field(default_factory=list)
    samples: list[tuple[int, ...]] = field(default_factory=list)
    ejections: list[EjectionWatch] = field(default_factory=list)
    #: Leases the balancer's sweeps expired (the first figure ``sweep()`` returns).
    leases_expired: int = 0
    #: Times an agent was newly ejected, as read after each sweep (see ``ejections``).
    ejection_count: int = 0

"""What a policy's run measured: response times, throughput, balance, and reactions to faults.

Definitions (the table, the JSON and the targets all use these):

- *measured requests*: those arriving at or after ``warmup_s`` (the cluster starts empty,
  so the first seconds are lighter than the rest);
- *response time*: finish - arrival (queue wait + service) of the measured requests that
  succeeded, including those that finish after ``duration_s`` (the run drains its queues,
  so a policy that builds a backlog is charged for all of it); percentiles are
  nearest-rank;
- *throughput*: successful requests finishing within [warmup_s, duration_s], per second;
- *refused*: measured requests the policy could not place (``NoAgentAvailable``);
- *utilisation* of an agent: slot time busy within [warmup_s, duration_s] over its slots
  times that span (from its join, for an agent that joins late); *imbalance*: the
  busiest agent's utilisation over the mean (1.0 = perfectly even);
- *share*: an agent's fraction of the measured requests placed;
- *traffic shift* after a ``slow`` fault at T: the pre-slowdown share is the agent's share
  of picks in [T - 10 s, T); a share is then taken over 1 s windows starting at T, T +
  0.1 s, T + 0.2 s, ...; the shift time is the end of the first window whose share is
  below half the pre-slowdown share, counted from T (so never less than 1 s);
- *ejection* after a ``fail`` fault at T: the failed requests the balancer was told of
  (ends with ``failed``) from T until it reported the agent ejected, that one included,
  compared with ``ejection_consecutive_failures``. It can exceed the threshold: requests
  that started service before T still succeed after it, and each success resets the run
  of failures. Also reported: the failing requests sent to the agent before ejection
  (those queued before T included) and how long after T the ejection came.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lb_service.simulate.engine import PolicyRun
from lb_service.simulate.scenario import Fault, Scenario

#: The span before a slowdown the pre-slowdown share is measured over.
SHIFT_BEFORE_S = 10.0
#: The width of the windows the share after a slowdown is measured over, and their step.
SHIFT_WINDOW_S = 1.0
SHIFT_STEP_S = 0.1
PERCENTILES = (50, 95, 99)


@dataclass(frozen=True, slots=True)
class AgentResult:
    """One agent under one policy."""

    agent_id: str
    requests: int
    failed: int
    share: float
    utilisation: float


@dataclass(frozen=True, slots=True)
class ShiftResult:
    """How fast traffic moved off an agent after it slowed down."""

    agent_id: str
    at_s: float
    factor: float
    before_share: float
    #: The agent's share of picks from T to the end of the fault (or of the arrivals).
    after_share: float
    #: Seconds from T (see the module docstring); None if the share never halved.
    shift_s: float | None


@dataclass(frozen=True, slots=True)
class EjectionResult:
    """How fast outlier ejection took a failing agent out of picks."""

    agent_id: str
    at_s: float
    #: The policy's ejection_consecutive_failures (0: ejection is off).
    threshold: int
    failures_before_ejection: int
    sent_before_ejection: int
    ejected_after_s: float | None


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """Everything reported for one policy."""

    name: str
    description: str
    reference: bool
    requests: int
    completed: int
    failed: int
    refused: int
    refused_by_reason: dict[str, int]
    throughput_per_s: float
    #: p50, p95, p99, mean and max response time of successful measured requests, in ms
    #: (NaN when none succeeded).
    latency_ms: dict[str, float]
    imbalance: float
    agents: tuple[AgentResult, ...]
    shifts: tuple[ShiftResult, ...]
    ejections: tuple[EjectionResult, ...]

    @property
    def p99_ms(self) -> float:
        """The 99th percentile response time."""
        return self.latency_ms["p99"]


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile of sorted values (NaN when there are none)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latencies(run: PolicyRun, arrival_ms: Sequence[float], warmup_s: float) -> list[float]:
    """Sorted response times (ms) of the run's successful measured requests."""
    start = bisect.bisect_left(arrival_ms, warmup_s * 1000)
    agent, finish, failed = run.agent, run.finish_ms, run.failed
    return sorted(
        finish[i] - arrival_ms[i]
        for i in range(start, len(arrival_ms))
        if agent[i] >= 0 and not failed[i]
    )


def summarise(scenario: Scenario, run: PolicyRun, arrival_ms: Sequence[float]) -> PolicyResult:
    """Reduce a run to the reported figures (see the module docstring)."""
    warm_ms, end_ms = scenario.warmup_s * 1000, scenario.duration_s * 1000
    first = bisect.bisect_left(arrival_ms, warm_ms)
    measured = range(first, len(arrival_ms))
    agent, failed, start, finish = run.agent, run.failed, run.start_ms, run.finish_ms
    n_agents = len(run.agent_ids)
    picks, failures = [0] * n_agents, [0] * n_agents
    busy = [0.0] * n_agents
    completed = failed_total = refused = finished_in_window = 0
    for i in range(len(arrival_ms)):
        a = agent[i]
        if a < 0:
            continue
        # Busy slot time within the measured window counts whatever arrived before it.
        busy[a] += max(0.0, min(finish[i], end_ms) - max(start[i], warm_ms))
    for i in measured:
        a = agent[i]
        if a < 0:
            refused += 1
            continue
        picks[a] += 1
        if failed[i]:
            failures[a] += 1
            failed_total += 1
            continue
        completed += 1
        if finish[i] <= end_ms:
            finished_in_window += 1
    span_s = scenario.duration_s - scenario.warmup_s
    utilisation = [
        busy[n] / (sim.slots * max(1e-9, end_ms - max(warm_ms, _joined_ms(scenario, sim.agent.id))))
        for n, sim in enumerate(scenario.agents)
    ]
    placed = sum(picks)
    agents = tuple(
        AgentResult(
            run.agent_ids[n],
            picks[n],
            failures[n],
            picks[n] / placed if placed else 0.0,
            utilisation[n],
        )
        for n in range(n_agents)
    )
    mean_util = sum(utilisation) / n_agents
    ordered = latencies(run, arrival_ms, scenario.warmup_s)
    latency = {f"p{q}": percentile(ordered, q) for q in PERCENTILES}
    latency["mean"] = sum(ordered) / len(ordered) if ordered else math.nan
    latency["max"] = ordered[-1] if ordered else math.nan
    measured_refusals = refused
    return PolicyResult(
        name=run.policy.name,
        description=run.policy.describe(),
        reference=run.policy.reference is not None,
        requests=len(measured),
        completed=completed,
        failed=failed_total,
        refused=measured_refusals,
        refused_by_reason=dict(sorted(run.refused.items())),
        throughput_per_s=finished_in_window / span_s,
        latency_ms=latency,
        imbalance=max(utilisation) / mean_util if mean_util > 0 else math.nan,
        agents=agents,
        shifts=tuple(
            traffic_shift(f, run, arrival_ms, scenario.duration_s)
            for f in scenario.faults
            if f.kind == "slow"
        ),
        ejections=tuple(
            EjectionResult(
                w.fault.agent_id,
                w.fault.at_s,
                run.config.ejection_consecutive_failures if run.config is not None else 0,
                w.failures_before_ejection,
                w.sent_before_ejection,
                w.ejected_after_s,
            )
            for w in run.ejections
        ),
    )


def _joined_ms(scenario: Scenario, agent_id: str) -> float:
    joins = [f.at_s for f in scenario.faults if f.kind == "join" and f.agent_id == agent_id]
    return min(joins, default=0.0) * 1000


def traffic_shift(
    fault: Fault, run: PolicyRun, arrival_ms: Sequence[float], duration_s: float
) -> ShiftResult:
    """How fast the agent's share of picks halved after the slowdown (module docstring)."""
    target = run.agent_ids.index(fault.agent_id)
    at = fault.at_s * 1000

    def share(lo_ms: float, hi_ms: float) -> float | None:
        lo, hi = bisect.bisect_left(arrival_ms, lo_ms), bisect.bisect_left(arrival_ms, hi_ms)
        placed = [a for a in run.agent[lo:hi] if a >= 0]
        return placed.count(target) / len(placed) if placed else None

    before = share(at - SHIFT_BEFORE_S * 1000, at) or 0.0
    stop = min(fault.until_s, duration_s) * 1000
    after = share(at, stop) or 0.0
    shift_s = None
    if before > 0:
        # Whole-ms steps: window edges must not drift with float rounding.
        step_ms, width_ms = SHIFT_STEP_S * 1000, SHIFT_WINDOW_S * 1000
        k = 0
        while True:
            lo = at + k * step_ms
            hi = lo + width_ms
            if hi > stop:
                break
            now = share(lo, hi)
            if now is not None and now < before / 2:
                shift_s = round(k * SHIFT_STEP_S + SHIFT_WINDOW_S, 6)
                break
            k += 1
    return ShiftResult(fault.agent_id, fault.at_s, fault.factor, before, after, shift_s)

"""What a policy's run measured: response times, throughput, balance, and reactions to faults.

Definitions (the table, the JSON and the targets all use these):

- *measured requests*: those arriving at or after ``warmup_s`` (the cluster starts empty,
  so the first seconds are lighter than the rest);
- *response time*: finish - arrival (queue wait + service) of the measured requests that
  succeeded, including those that finish after ``duration_s`` (the run drains its queues,
  so a policy that builds a backlog is charged for all of it);
- *p50, p95, p99, max*: nearest-rank percentiles of the response times of the measured
  requests that succeeded *or were refused*, a refused request counting as infinitely
  slow: a policy must not look fast by turning requests away, so one refusing more than
  1% of them has an infinite p99 (shown as "inf", null in the JSON), and any refusal makes
  the max infinite. Failed requests are left out (they are counted under *failed*);
  *mean* is that of the successful requests only (a mean with an infinite term says
  nothing), so read it beside *refused*;
- *throughput*: successful requests finishing within [warmup_s, duration_s], per second;
- *refused*: measured requests the policy could not place (``NoAgentAvailable``);
- *leases expired*: leases the balancer's ``sweep`` expired over the whole run (requests
  started and not ended within ``request_timeout_s``, e.g. behind a long backlog);
- *ejections*: times outlier ejection took an agent out of picks over the whole run, read
  from the balancer after each sweep and at the end (see ``engine``); 0 for references;
- *affinity kept*: of the measured requests that carry a session id and whose session
  had an earlier placed request (measured or not), the share placed on the same agent as
  that session's previous placed request; a refused one counts as not kept. It is read
  from the run's placements alone, so it applies to the references too; NaN (null) when
  no such request exists;
- *backlog* at a sample time: the requests waiting for a slot, summed over the agents
  (per agent, requests in system beyond its slots). *unstable*: split the measured window
  [warmup_s, duration_s] into quarters; the run is unstable when the least backlog sampled
  in the last quarter exceeds the greatest sampled in the second quarter by more than the
  number of agents (the *backlog growth*). A backlog that keeps growing is higher at every
  moment of the last quarter than at any moment of the second, whatever level it had
  reached by then; a stable queue empties now and then, so the least of the last quarter
  stays low, and a burst that drains within the window does not lift it. (A ratio of
  quarter means, e.g. "last quarter over twice the second", misses steady growth: busy
  slots and the backlog already built by the second quarter inflate the base; a backlog
  growing steadily from the start never doubles between them once the warm-up is over an
  eighth of the window.) The margin of one waiting request per agent keeps small
  fluctuations from counting. NaN growth (not unstable) when a quarter holds no sample.
  Percentiles of an unstable run depend on how long it ran, so targets judged on it are
  missed (see ``targets``);
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
    #: p50, p95, p99 and max response time of the measured requests, a refused one as
    #: infinity; mean of the successful ones; in ms (NaN when there are none).
    latency_ms: dict[str, float]
    imbalance: float
    agents: tuple[AgentResult, ...]
    shifts: tuple[ShiftResult, ...]
    ejections: tuple[EjectionResult, ...]
    leases_expired: int = 0
    #: Outlier ejections over the run (``ejections`` above are per fail fault).
    ejection_count: int = 0
    #: The share of session requests kept on their session's agent; NaN when none.
    affinity_kept: float = math.nan
    #: The requests ``affinity_kept`` is the share of.
    affinity_requests: int = 0
    unstable: bool = False
    #: Least backlog in the last quarter minus greatest in the second (NaN: no samples).
    backlog_growth: float = math.nan

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


def refusals(run: PolicyRun, arrival_ms: Sequence[float], warmup_s: float) -> int:
    """How many measured requests the run refused."""
    start = bisect.bisect_left(arrival_ms, warmup_s * 1000)
    return sum(1 for a in run.agent[start:] if a < 0)


def affinity(
    run: PolicyRun, arrival_ms: Sequence[float], session: Sequence[str], warmup_s: float
) -> tuple[float, int]:
    """The affinity kept (module docstring) and how many requests it is a share of."""
    first = bisect.bisect_left(arrival_ms, warmup_s * 1000)
    previous: dict[str, int] = {}
    kept = counted = 0
    for i, session_id in enumerate(session):
        if not session_id:
            continue
        agent = run.agent[i]
        before = previous.get(session_id)
        if before is not None and i >= first:
            counted += 1
            kept += agent == before
        if agent >= 0:
            previous[session_id] = agent
    return (kept / counted if counted else math.nan), counted


def backlog_growth(scenario: Scenario, run: PolicyRun) -> float:
    """The least backlog of the window's last quarter minus the greatest of its second."""
    slots = [sim.slots for sim in scenario.agents]
    span = scenario.duration_s - scenario.warmup_s
    second = (scenario.warmup_s + span / 4, scenario.warmup_s + span / 2)
    last = scenario.warmup_s + span * 3 / 4
    early: list[int] = []
    late: list[int] = []
    for t, sample in zip(run.sample_s, run.samples, strict=True):
        if second[0] <= t < second[1]:
            early.append(_backlog(sample, slots))
        elif last <= t <= scenario.duration_s:
            late.append(_backlog(sample, slots))
    if not early or not late:
        return math.nan
    return float(min(late) - max(early))


def _backlog(sample: Sequence[int], slots: Sequence[int]) -> int:
    return sum(max(0, n - s) for n, s in zip(sample, slots, strict=True))


def is_unstable(scenario: Scenario, growth: float) -> bool:
    """Whether a backlog growth marks the run unstable (more than one request per agent)."""
    return growth > len(scenario.agents)


def summarise(
    scenario: Scenario,
    run: PolicyRun,
    arrival_ms: Sequence[float],
    session: Sequence[str] = (),
) -> PolicyResult:
    """Reduce a run to the reported figures (see the module docstring).

    ``session`` is each request's session id (none given: no affinity to measure).
    """
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
    succeeded = latencies(run, arrival_ms, scenario.warmup_s)
    # Refusals rank after every response: infinitely slow (module docstring).
    ordered = succeeded + [math.inf] * refused
    latency = {f"p{q}": percentile(ordered, q) for q in PERCENTILES}
    latency["mean"] = sum(succeeded) / len(succeeded) if succeeded else math.nan
    latency["max"] = ordered[-1] if ordered else math.nan
    measured_refusals = refused
    kept, kept_of = affinity(run, arrival_ms, session, scenario.warmup_s)
    growth = backlog_growth(scenario, run)
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
        leases_expired=run.leases_expired,
        ejection_count=run.ejection_count,
        affinity_kept=kept,
        affinity_requests=kept_of,
        unstable=is_unstable(scenario, growth),
        backlog_growth=growth,
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

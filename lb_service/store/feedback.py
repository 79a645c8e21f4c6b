"""What a finished request teaches the balancer: latency estimates, failures, ejection, slow start.

These are pure rules over one agent's ``AgentStats``, in two kinds. *Bookkeeping*
(``open_lease``, ``close_lease``): counts and busy time, which a store keeps atomically
with the lease itself (the Redis store in its scripts). *Estimates* (``fold_end``,
``fold_expiry``): every other figure, computed here from the booked record and written
back by the store; no store writes these rules again.

- **Moving average** (``avg_latency_ms``): what GetLoads reports and the plain
  latency-based strategy ranks by.
- **Peak-EWMA** (``cost_ms``, after Finagle/Linkerd): a sample slower than the current
  estimate replaces it at once; a faster one pulls it down with weight ``1 - exp(-dt /
  decay_ms)``, ``dt`` being the time since the previous sample, so the estimate decays
  towards newer samples over ``decay_ms`` however often they come. The stored figure
  changes only with samples; the latency-based strategy fades it with time, over the
  same ``decay_ms``, towards the agent's service time by its capacity (not towards
  zero: a slow host keeps looking slow), so one long request of a heavy-tailed
  workload keeps an agent out of comparisons for seconds, not until a sample it can no
  longer get. The default ``decay_ms`` is short (see the README's measurements): a
  heavy-tailed sample is mostly news about its request. A failed request is observed
  as at least ``failure_penalty_ms``, so an agent that fails fast looks slow after
  each failure. Queued work counts too: latency-based ranks
  by the larger of the faded estimate and the drain time ``(active + 1) / capacity``.
- **Outlier ejection** (after Envoy): ``consecutive_failures`` failures in a row eject
  the agent for ``base_ms`` x times ejected (capped at ``max_ms``), never more than
  ``max_share`` of the known agents at once. The multiplier starts over once the agent
  has gone a whole ``max_ms`` without being ejected. Only reported failures count: an
  expired lease is lateness, not failure (see ``fold_expiry``).
- **Capacity** (``lb_service.capacity``): every lease that opens or closes moves the
  agent's busy time; every success is a completion.
- **Slow start** (after Envoy): a newly registered agent, or one back from ejection,
  takes a growing share of the picks it would get, from ``min_share`` to all of them
  over ``window_ms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lb_service import capacity, model_cost
from lb_service.store.base import AgentStats, EndOutcome, EndResult


@dataclass(frozen=True, slots=True)
class Ejection:
    """Outlier-ejection thresholds; ``consecutive_failures == 0`` turns ejection off."""

    consecutive_failures: int = 5
    base_ms: float = 30_000.0
    max_ms: float = 300_000.0
    max_share: float = 0.5


@dataclass(frozen=True, slots=True)
class Feedback:
    """How request ends update an agent's figures (see the module docstring)."""

    #: Weight of a new sample in the moving average (1 = only the last sample).
    smoothing: float = 0.3
    #: Time constant of the peak-EWMA estimate's decay (``BalancerConfig.ewma_decay_s``).
    decay_ms: float = 250.0
    #: The least latency a failed request is observed as by the peak-EWMA estimate.
    failure_penalty_ms: float = 5_000.0
    ejection: Ejection = Ejection()


def next_cost(stats: AgentStats, sample_ms: float, now_ms: int, decay_ms: float) -> float:
    """The peak-EWMA estimate after observing ``sample_ms`` at ``now_ms``."""
    current = stats.cost_ms
    if current is None or sample_ms >= current:
        return sample_ms
    kept = math.exp(-max(now_ms - stats.cost_at_ms, 0) / decay_ms)
    return current * kept + sample_ms * (1.0 - kept)


def observe(
    stats: AgentStats,
    latency_ms: float,
    failed: bool,
    now_ms: int,
    feedback: Feedback,
    ejected_now: int,
    population: int,
) -> AgentStats:
    """Fold one reported request end into the agent's figures (its active count is left alone).

    ``ejected_now`` is how many agents are ejected at ``now_ms`` and ``population`` how
    many agents the share is taken of; together they cap ejection at ``max_share``.
    """
    previous = stats.avg_latency_ms
    if previous is None:
        average = latency_ms
    else:
        average = previous + feedback.smoothing * (latency_ms - previous)
    sample = max(latency_ms, feedback.failure_penalty_ms) if failed else latency_ms
    cost = next_cost(stats, sample, now_ms, feedback.decay_ms)
    updated = replace(
        stats,
        avg_latency_ms=average,
        cost_ms=cost,
        cost_at_ms=now_ms,
        last_request_at_ms=now_ms,
        failed_requests=stats.failed_requests + failed,
        consecutive_failures=stats.consecutive_failures + 1 if failed else 0,
    )
    return _maybe_eject(updated, now_ms, feedback.ejection, ejected_now, population)


def open_lease(stats: AgentStats, now_ms: int) -> AgentStats:
    """Bookkeeping when a lease opens: busy time so far, active + 1, the request counted."""
    stats = capacity.accrue(stats, now_ms)
    return replace(
        stats,
        active=stats.active + 1,
        total_requests=stats.total_requests + 1,
        last_request_at_ms=now_ms,
    )


def close_lease(stats: AgentStats, now_ms: int) -> AgentStats:
    """Bookkeeping when a lease closes, however it ended: busy time so far, active - 1."""
    stats = capacity.accrue(stats, now_ms)
    return replace(stats, active=stats.active - 1)


def fold_end(
    stats: AgentStats,
    closed_lease: bool,
    latency_ms: float,
    failed: bool,
    now_ms: int,
    feedback: Feedback,
    ejected_now: int,
    population: int,
    model: str | None = "",
    overtook: int = 0,
) -> AgentStats:
    """The figures after a reported end, the lease (if it closed one) already booked.

    A success that closed a lease is a completion for the capacity estimate; a failure
    is not (a server that fails fast would look fast), and its busy time is dropped.
    A success also teaches the model's cost on the agent (``model_cost``), unless its
    lease's lesson is None (it waited for a slot).
    """
    if closed_lease:
        stats = capacity.expired(stats) if failed else capacity.completed(stats, overtook)
    if not failed and model is not None:
        stats = model_cost.observe(stats, model, latency_ms)
    return observe(stats, latency_ms, failed, now_ms, feedback, ejected_now, population)


def fold_expiry(stats: AgentStats) -> AgentStats:
    """The figures after a lease expired, the lease already booked.

    It counts as a failed request, but as lateness, not an agent failure: it feeds
    neither the latency estimates nor outlier ejection, because a lease also expires
    when its dispatcher crashed or lost it, and under a backlog for requests that are
    merely late. A hung agent is caught by the dispatchers' own time-outs, which they
    report as failed ends; meanwhile its open leases raise its relative load. The busy
    time since the last completion is dropped (``capacity.expired``).
    """
    return capacity.expired(replace(stats, failed_requests=stats.failed_requests + 1))


def _maybe_eject(
    stats: AgentStats, now_ms: int, rule: Ejection, ejected_now: int, population: int
) -> AgentStats:
    threshold = rule.consecutive_failures
    if threshold == 0 or stats.consecutive_failures < threshold or is_ejected(stats, now_ms):
        return stats
    # floor: "never more than the share", so one agent of one is never ejected at 50%.
    if ejected_now + 1 > math.floor(rule.max_share * population):
        return stats
    # A whole max_ms without ejection wipes the slate: the back-off is for repeat offenders.
    quiet = stats.times_ejected and now_ms - stats.ejected_until_ms >= rule.max_ms
    times = 1 if quiet else stats.times_ejected + 1
    duration = min(rule.base_ms * times, rule.max_ms)
    return replace(
        stats,
        consecutive_failures=0,
        times_ejected=times,
        ejected_until_ms=now_ms + math.ceil(duration),
    )


def is_ejected(stats: AgentStats, now_ms: int) -> bool:
    """Whether the agent is ejected at ``now_ms``."""
    return stats.ejected_until_ms > now_ms


def slow_start_share(stats: AgentStats, now_ms: int, window_ms: float, min_share: float) -> float:
    """The share (min_share..1) of its picks an agent takes while warming up; 1 when warm.

    Warm-up starts when the agent registered or, if later, when its ejection ended.
    """
    if window_ms <= 0:
        return 1.0
    started = max(stats.joined_ms, stats.ejected_until_ms)
    elapsed = now_ms - started
    if elapsed >= window_ms or elapsed < 0:
        return 1.0
    return min_share + (1.0 - min_share) * elapsed / window_ms


def end_result(
    outcome: EndOutcome, agent_id: str, before: AgentStats, after: AgentStats, now_ms: int
) -> EndResult:
    """What an end that was recorded did, told from the agent's record before and after.

    It ejected the agent when the record is ejected now with a new deadline; the failures
    in a row that did it are the ones before this end, plus this one.
    """
    ejected = is_ejected(after, now_ms) and after.ejected_until_ms != before.ejected_until_ms
    return EndResult(
        outcome,
        agent_id=agent_id,
        ejected_until_ms=after.ejected_until_ms if ejected else 0,
        failures=before.consecutive_failures + 1 if ejected else 0,
    )

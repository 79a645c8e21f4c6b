"""The rules that fold a finished request into an agent's figures (store/feedback.py)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from lb_service.store.base import AgentStats
from lb_service.store.feedback import (
    Ejection,
    Feedback,
    fold_end,
    fold_expiry,
    is_ejected,
    next_cost,
    observe,
    slow_start_share,
)

T0 = 1_000_000
RULES = Feedback(smoothing=0.5, decay_ms=10_000.0, failure_penalty_ms=5_000.0)


def ok(stats: AgentStats, latency_ms: float, now_ms: int, rules: Feedback = RULES) -> AgentStats:
    """A successful request among ten healthy agents."""
    return observe(stats, latency_ms, False, now_ms, rules, ejected_now=0, population=10)


def fail(
    stats: AgentStats,
    now_ms: int,
    rules: Feedback = RULES,
    ejected_now: int = 0,
    population: int = 10,
    latency_ms: float = 5.0,
) -> AgentStats:
    """A failed request."""
    return observe(stats, latency_ms, True, now_ms, rules, ejected_now, population)


def test_first_sample_is_the_estimate_and_the_average() -> None:
    """Before any sample there is no estimate; the first becomes both figures as is."""
    assert AgentStats().cost_ms is None
    stats = ok(AgentStats(), 200.0, T0)
    assert stats.avg_latency_ms == 200.0
    assert (stats.cost_ms, stats.cost_at_ms) == (200.0, T0)


def test_a_slower_sample_lifts_the_estimate_at_once() -> None:
    """Peak-EWMA: a sample above the estimate replaces it, while the average moves halfway."""
    stats = ok(ok(AgentStats(), 100.0, T0), 900.0, T0 + 1)
    assert stats.cost_ms == 900.0
    assert stats.avg_latency_ms == 500.0


def test_a_faster_sample_pulls_the_estimate_down_by_the_time_since_the_last() -> None:
    """One decay time after a 1 s peak, a 100 ms sample leaves 1/e of the gap."""
    stats = ok(ok(AgentStats(), 1_000.0, T0), 100.0, T0 + 10_000)
    assert stats.cost_ms == pytest.approx(100.0 + 900.0 / math.e)
    assert stats.cost_at_ms == T0 + 10_000


def test_samples_in_quick_succession_barely_move_the_estimate() -> None:
    """Decay is by time, not by count: ten fast samples within 10 ms keep a peak nearly whole."""
    stats = ok(AgentStats(), 1_000.0, T0)
    for n in range(1, 11):
        stats = ok(stats, 100.0, T0 + n)
    assert stats.cost_ms == pytest.approx(1_000.0 - 900.0 * (1 - math.exp(-10 / 10_000)))
    assert stats.cost_ms is not None
    assert stats.cost_ms > 999.0


def test_without_samples_the_estimate_stays() -> None:
    """No sample, no change: an agent is judged by what it last did, however long ago."""
    stats = ok(AgentStats(), 1_000.0, T0)
    assert next_cost(stats, 1_000.0, T0 + 3_600_000, 10_000.0) == 1_000.0


def test_a_failure_counts_as_at_least_the_penalty() -> None:
    """A request that fails in 5 ms is observed as the 5 s penalty, so it never looks fast."""
    stats = fail(ok(AgentStats(), 100.0, T0), T0 + 1)
    assert stats.cost_ms == 5_000.0
    assert stats.avg_latency_ms == pytest.approx(52.5)  # the reported latency, averaged
    assert stats.failed_requests == 1


def test_an_expired_lease_is_lateness_not_a_failure() -> None:
    """fold_expiry counts a failed request and drops the busy time since the last fold.

    No latency sample, no step towards ejection: the figures stay as they were.
    """
    before = replace(fail(ok(AgentStats(), 100.0, T0), T0 + 1), busy_total_ms=250.0)
    after = fold_expiry(before)
    assert after == replace(before, failed_requests=before.failed_requests + 1, cap_mark_ms=250.0)


def test_only_a_successful_end_of_a_lease_is_a_completion() -> None:
    """fold_end folds a completion for a success that closed a lease, never for a failure."""
    booked = AgentStats(busy_total_ms=400.0)
    done = fold_end(booked, True, 100.0, False, T0, RULES, 0, 10)
    assert (done.completions, done.cap_done, done.cap_busy_ms, done.cap_mark_ms) == (
        1,
        1.0,
        400.0,
        400.0,
    )
    failed = fold_end(booked, True, 100.0, True, T0, RULES, 0, 10)
    assert (failed.completions, failed.cap_done, failed.cap_busy_ms, failed.cap_mark_ms) == (
        0,
        0.0,
        0.0,
        400.0,
    )
    assert failed.failed_requests == 1
    unleased = fold_end(booked, False, 100.0, False, T0, RULES, 0, 10)
    assert (unleased.completions, unleased.cap_mark_ms) == (0, 0.0)


def test_consecutive_failures_eject_and_a_success_resets_the_count() -> None:
    """Five failures in a row eject for 30 s; a success in between starts the count again."""
    stats = AgentStats()
    for n in range(4):
        stats = fail(stats, T0 + n)
    stats = ok(stats, 10.0, T0 + 4)
    assert stats.consecutive_failures == 0
    for n in range(5):
        assert not is_ejected(stats, T0 + 5 + n)
        stats = fail(stats, T0 + 5 + n)
    assert stats.ejected_until_ms == T0 + 9 + 30_000
    assert (stats.times_ejected, stats.consecutive_failures) == (1, 0)
    assert is_ejected(stats, T0 + 9 + 29_999)
    assert not is_ejected(stats, T0 + 9 + 30_000)


def eject(stats: AgentStats, now_ms: int) -> AgentStats:
    """Five failures in a row at ``now_ms``."""
    for _ in range(5):
        stats = fail(stats, now_ms)
    return stats


def test_repeat_ejections_back_off_and_cap() -> None:
    """The n-th ejection lasts n x 30 s, never more than 300 s."""
    stats, now, durations = AgentStats(), T0, []
    for _ in range(12):
        stats = eject(stats, now)
        durations.append((stats.ejected_until_ms - now) // 1000)
        now = stats.ejected_until_ms + 1_000  # back, and failing again soon after
    assert durations == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300]


def test_a_quiet_spell_resets_the_back_off() -> None:
    """An agent not ejected for a whole max ejection time starts again at the base time."""
    stats = eject(eject(AgentStats(), T0), T0 + 31_000)
    assert stats.times_ejected == 2
    later = stats.ejected_until_ms + 300_000
    again = eject(stats, later)
    assert (again.times_ejected, again.ejected_until_ms - later) == (1, 30_000)


@pytest.mark.parametrize(
    ("ejected_now", "population", "ejects"),
    [(0, 10, True), (4, 10, True), (5, 10, False), (0, 1, False), (0, 2, True), (1, 2, False)],
)
def test_ejection_never_exceeds_the_max_share(
    ejected_now: int, population: int, ejects: bool
) -> None:
    """At 50%, an agent is ejected only while fewer than half (rounded down) would be out."""
    stats = AgentStats()
    for _ in range(5):
        stats = fail(stats, T0, ejected_now=ejected_now, population=population)
    assert is_ejected(stats, T0) is ejects


def test_ejection_turned_off_never_ejects() -> None:
    """With consecutive_failures 0 no run of failures ejects."""
    rules = Feedback(ejection=Ejection(consecutive_failures=0))
    stats = AgentStats()
    for n in range(50):
        stats = fail(stats, T0 + n, rules)
    assert not is_ejected(stats, T0 + 50)
    assert stats.consecutive_failures == 50


def test_slow_start_ramps_linearly_from_the_minimum_share() -> None:
    """Over a 60 s window the share goes 0.1 → 0.55 → 1 from the join time; 0 = off."""
    stats = AgentStats(joined_ms=T0)
    assert slow_start_share(stats, T0, 60_000.0, 0.1) == pytest.approx(0.1)
    assert slow_start_share(stats, T0 + 30_000, 60_000.0, 0.1) == pytest.approx(0.55)
    assert slow_start_share(stats, T0 + 60_000, 60_000.0, 0.1) == 1.0
    assert slow_start_share(stats, T0, 0.0, 0.1) == 1.0


def test_slow_start_begins_again_when_an_ejection_ends() -> None:
    """A returning agent ramps from the end of its ejection, not from when it joined."""
    stats = AgentStats(joined_ms=T0, ejected_until_ms=T0 + 100_000)
    assert slow_start_share(stats, T0 + 100_000, 60_000.0, 0.2) == pytest.approx(0.2)
    assert slow_start_share(stats, T0 + 130_000, 60_000.0, 0.2) == pytest.approx(0.6)

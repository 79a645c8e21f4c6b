"""Reported figures and targets, computed from hand-made runs and known numbers."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest

from lb_service.simulate.engine import EjectionWatch, PolicyRun
from lb_service.simulate.metrics import (
    AgentResult,
    EjectionResult,
    PolicyResult,
    ShiftResult,
    affinity,
    backlog_growth,
    percentile,
    summarise,
    traffic_shift,
)
from lb_service.simulate.plots import ccdf_points
from lb_service.simulate.policies import PolicySpec
from lb_service.simulate.scenario import Fault, TargetSpec
from lb_service.simulate.targets import TargetResult, judge, over_runs
from tests.simulate.builders import policy, scenario


def test_percentiles_are_nearest_rank() -> None:
    """The q-th percentile of sorted values is the ceil(q% x n)-th value; none gives NaN."""
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def _run(agent: list[int], start: list[float], finish: list[float], **kw: Any) -> PolicyRun:
    return PolicyRun(
        policy("round-robin"),
        None,
        ("a-1", "a-2"),
        agent=agent,
        start_ms=start,
        finish_ms=finish,
        failed=kw.pop("failed", [False] * len(agent)),
        **kw,
    )


def test_summary_measures_after_warm_up_and_charges_the_drain() -> None:
    """Latency counts measured successes, late or not, and refusals as infinitely slow."""
    sim = scenario(duration_s=10, warmup_s=2)
    arrival = [0.0, 3000.0, 4000.0, 5000.0, 6000.0]
    run = _run(
        agent=[0, 0, 1, -1, 1],
        start=[0.0, 3000.0, 4000.0, math.nan, 6000.0],
        finish=[2500.0, 4000.0, 14_000.0, math.nan, 6500.0],
        failed=[False, False, False, False, True],
        refused=Counter({"all_busy": 1}),
    )
    result = summarise(sim, run, arrival)
    assert (result.requests, result.completed, result.failed, result.refused) == (4, 2, 1, 1)
    # Responses: 1000 ms and 10,000 ms (it drains after the end), then the refusal as
    # infinity; the failure is not one. The mean is that of the successes.
    assert result.latency_ms["p50"] == 10_000
    assert result.latency_ms["p99"] == math.inf
    assert result.latency_ms["max"] == math.inf
    assert result.latency_ms["mean"] == 5500
    assert result.throughput_per_s == pytest.approx(1 / 8)
    # Busy within [2, 10] s: a-1 from 2 to 2.5 and 3 to 4 s; a-2 from 4 to 10 and 6 to 6.5 s.
    assert [a.utilisation for a in result.agents] == pytest.approx([1.5 / 8, 6.5 / 8])
    assert result.imbalance == pytest.approx((6.5 / 8) / (8 / 16))
    assert [a.requests for a in result.agents] == [1, 2]
    assert [a.share for a in result.agents] == pytest.approx([1 / 3, 2 / 3])


def test_traffic_shift_is_the_end_of_the_first_window_below_half() -> None:
    """The shift time is when a 1 s window's share first drops below half the share before T."""
    # One pick every 100 ms; a-1 takes every other one (share 0.5) until 10.5 s, then none.
    arrival = [t * 100.0 for t in range(200)]
    agent = [0 if (t % 2 == 0 and t < 105) else 1 for t in range(200)]
    run = _run(agent=agent, start=arrival, finish=arrival)
    fault = Fault("a-1", "slow", at_s=10, factor=4)
    shift = traffic_shift(fault, run, arrival, duration_s=20)
    assert shift.before_share == pytest.approx(0.5)
    # Windows start at 10.0, 10.1, ...: [10.0, 11.0) holds 3 of a-1's picks out of 10 (0.3),
    # [10.1, 11.1) holds 2 (0.2 < 0.25), so the shift ends 1.1 s after T.
    assert shift.shift_s == pytest.approx(1.1)


def test_traffic_shift_that_never_happens_is_none() -> None:
    """If the share never halves before the fault ends, there is no shift time."""
    arrival = [t * 100.0 for t in range(200)]
    run = _run(agent=[t % 2 for t in range(200)], start=arrival, finish=arrival)
    shift = traffic_shift(Fault("a-1", "slow", at_s=10, factor=4), run, arrival, duration_s=20)
    assert shift.shift_s is None


def test_ejection_figures_carry_the_policy_threshold() -> None:
    """A fail fault's ejection is reported with the policy's consecutive-failure threshold."""
    sim = scenario(
        faults=[{"agent": "a-1", "kind": "fail", "at_s": 0}],
        balancer={"ejection_consecutive_failures": 4},
    )
    spec = policy("round-robin")
    watch = EjectionWatch(sim.faults[0], 4, 6, 0.5)
    run = PolicyRun(
        spec,
        spec.config(sim.balancer),
        ("a-1", "a-2"),
        agent=[0],
        start_ms=[0.0],
        finish_ms=[5.0],
        failed=[True],
        ejections=[watch],
    )
    (ejection,) = summarise(sim, run, [0.0]).ejections
    assert ejection == EjectionResult("a-1", 0.0, 4, 4, 6, 0.5)


def _result(name: str, p99: float, reference: bool = False, **kw: Any) -> PolicyResult:
    return PolicyResult(
        name=name,
        description=name,
        reference=reference,
        requests=100,
        completed=100,
        failed=0,
        refused=0,
        refused_by_reason={},
        throughput_per_s=1.0,
        latency_ms={"p50": p99 / 2, "p95": p99, "p99": p99, "mean": p99 / 2, "max": p99},
        imbalance=1.0,
        agents=(AgentResult("a-1", 100, 0, 1.0, 0.5),),
        shifts=kw.get("shifts", ()),
        ejections=kw.get("ejections", ()),
        affinity_kept=kw.get("affinity_kept", math.nan),
        affinity_requests=kw.get("affinity_requests", 0),
        unstable=kw.get("unstable", False),
        backlog_growth=kw.get("backlog_growth", math.nan),
    )


_SLOW = Fault("a-1", "slow", at_s=60, factor=5)
_FAIL = Fault("a-2", "fail", at_s=90)


def test_targets_are_judged_from_known_numbers() -> None:
    """Each kind of target divides or reads the right figures and compares with its threshold."""
    results = [
        _result("rr", 3000),
        _result("p2c", 1200, shifts=(ShiftResult("a-1", 60, 5, 0.2, 0.05, 2.5),)),
        _result("scan", 2000, ejections=(EjectionResult("a-2", 90, 5, 5, 7, 0.3),)),
        _result("oracle", 1000, reference=True),
    ]
    found = judge(
        [
            TargetSpec("p99-vs-oracle", 1.3),
            TargetSpec("p99-ratio", 0.5, policy="p2c", baseline="scan"),
            TargetSpec("traffic-shift", 2.0, policy="p2c"),
            TargetSpec("ejection", math.nan, policy="scan"),
        ],
        results,
        [_SLOW, _FAIL],
    )
    assert [(t.measured, t.threshold, t.met) for t in found] == [
        (pytest.approx(1.2), 1.3, True),
        (pytest.approx(0.6), 0.5, False),
        (2.5, 2.0, False),
        (5.0, 5, True),
    ]
    assert "p2c" in found[0].detail


def test_a_target_without_its_policies_is_skipped() -> None:
    """A target whose policy was not run is reported as skipped (met is None), not missed."""
    (found,) = judge([TargetSpec("p99-vs-oracle", 1.3)], [_result("rr", 3000)], [])
    assert found.met is None
    assert found.detail.startswith("skipped")


def test_never_ejected_or_never_shifted_is_missed() -> None:
    """An agent never ejected, or traffic that never moved, misses its target."""
    results = [
        _result(
            "p",
            1000,
            shifts=(ShiftResult("a-1", 60, 5, 0.2, 0.2, None),),
            ejections=(EjectionResult("a-2", 90, 5, 40, 40, None),),
        )
    ]
    shift, ejection = judge(
        [TargetSpec("traffic-shift", 5, policy="p"), TargetSpec("ejection", math.nan, policy="p")],
        results,
        [_SLOW, _FAIL],
    )
    assert (shift.met, shift.measured) == (False, None)
    assert (ejection.met, ejection.measured, ejection.threshold) == (False, 40.0, 5)


def test_describe_names_strategy_and_options() -> None:
    """A policy is shown as its strategy and options, a reference as such."""
    assert policy("least-connections-full").describe() == "least-connections (choice_count=0)"
    assert policy("oracle").describe() == "reference: oracle"
    assert PolicySpec("x", reference="random").config({}).choice_count is None


def test_refusing_more_than_one_percent_makes_p99_infinite() -> None:
    """A refusal ranks as infinitely slow: 2 of 200 refused keep p99 finite, 3 make it inf."""
    sim = scenario(duration_s=100)
    arrival = [t * 100.0 for t in range(200)]
    for refused, p99 in ((2, 100.0), (3, math.inf)):
        agent = [-1 if t < refused else t % 2 for t in range(200)]
        finish = [math.nan if a < 0 else t + 100.0 for a, t in zip(agent, arrival, strict=True)]
        run = _run(agent=agent, start=arrival, finish=finish)
        result = summarise(sim, run, arrival)
        assert result.refused == refused
        assert result.latency_ms["p99"] == p99, refused
        assert result.latency_ms["p50"] == 100


def test_failures_stay_out_of_the_percentiles() -> None:
    """A failed request is neither a response time nor infinitely slow: it is only counted."""
    sim = scenario(duration_s=10)
    arrival = [0.0, 1000.0, 2000.0]
    run = _run(
        agent=[0, 1, 0],
        start=arrival,
        finish=[500.0, 1005.0, 2500.0],
        failed=[False, True, False],
    )
    result = summarise(sim, run, arrival)
    assert (result.failed, result.refused) == (1, 0)
    assert result.latency_ms["p99"] == 500
    assert result.latency_ms["max"] == 500


def test_affinity_is_the_share_of_session_requests_kept_on_the_previous_agent() -> None:
    """Measured session requests after a placed one of theirs count; a refusal is not kept."""
    arrival = [0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 6000.0, 7000.0]
    session = ["s", "s", "t", "t", "", "s", "t", "u"]
    # s: warm-up on 0, then 0 (kept), then 1 (moved). t: 1, refused (not kept), then 1
    # (kept: its previous *placed* request was on 1). The request without a session and
    # u's first request do not count.
    agent = [0, 0, 1, -1, 0, 1, 1, 0]
    run = _run(agent=agent, start=arrival, finish=arrival)
    kept, of = affinity(run, arrival, session, warmup_s=0.5)
    assert kept == pytest.approx(2 / 4)
    assert of == 4
    sim = scenario(duration_s=10, warmup_s=0.5)
    result = summarise(sim, run, arrival, session)
    assert result.affinity_kept == pytest.approx(0.5)
    assert result.affinity_requests == 4


def test_affinity_is_nan_without_repeated_sessions() -> None:
    """With no session request following another, there is no affinity to measure."""
    arrival = [0.0, 1000.0]
    run = _run(agent=[0, 1], start=arrival, finish=arrival)
    assert math.isnan(affinity(run, arrival, ["a", "b"], warmup_s=0)[0])
    assert math.isnan(summarise(scenario(), run, arrival).affinity_kept)


def _sampled(totals: list[int]) -> PolicyRun:
    """A run of two one-slot agents whose in-system counts are sampled once a second."""
    run = _run(agent=[], start=[], finish=[])
    run.sample_s = [float(t) for t in range(len(totals))]
    # Each agent serves one request and queues the rest of its half.
    run.samples = [(1 + n // 2, 1 + n - n // 2) for n in totals]
    return run


def test_a_backlog_that_keeps_growing_is_unstable() -> None:
    """A backlog rising steadily (from well above zero) is unstable; quarter means would miss it.

    Window [20, 100] s: the second quarter is [40, 60) s, the last [80, 100] s. The backlog
    grows by 1 a second from 200 at 0 s: the least of the last quarter (280) is 21 more
    than the greatest of the second (259), over the 2 agents, though its mean (290) is far
    from twice the second's (250).
    """
    sim = scenario(duration_s=100, warmup_s=20)
    run = _sampled([200 + t for t in range(101)])
    assert backlog_growth(sim, run) == 21
    assert summarise(sim, run, []).unstable
    assert not summarise(sim, _sampled([200 + t for t in range(101)][::-1]), []).unstable


def test_a_steady_backlog_or_a_drained_burst_is_stable() -> None:
    """A queue that empties now and then, even after a late burst, is not unstable."""
    sim = scenario(duration_s=100, warmup_s=20)
    steady = [(t * 7) % 5 for t in range(101)]
    late_burst = [40 if 82 <= t < 90 else (t * 7) % 5 for t in range(101)]
    for totals in (steady, late_burst):
        result = summarise(sim, _sampled(totals), [])
        assert not result.unstable
        assert result.backlog_growth <= 0


def test_backlog_growth_needs_samples_in_both_quarters() -> None:
    """Without samples in the second or the last quarter the run is not judged unstable."""
    sim = scenario(duration_s=100, warmup_s=20)
    run = _sampled([0, 50])
    assert math.isnan(backlog_growth(sim, run))
    assert not summarise(sim, run, []).unstable


def test_ccdf_points_spread_over_the_tail_and_level_off_at_the_refused_share() -> None:
    """The CCDF's points are P(response > x) spaced in log P; refusals hold its floor up."""
    ordered = [float(v) for v in range(1, 10_001)]
    xs, ys = ccdf_points(ordered, refused=0, points=40)
    assert xs == sorted(xs)
    assert ys == sorted(ys, reverse=True)
    assert xs[0] == 1.0
    assert ys[0] == pytest.approx(0.9999)
    assert xs[-1] == 9999.0
    assert ys[-1] == pytest.approx(1e-4)
    # Spaced in log P: about as many points below P = 0.01 as between 0.01 and 1 (evenly
    # spaced ranks would put 1% of them there).
    assert sum(1 for y in ys if y < 0.01) >= len(ys) / 3
    xs, ys = ccdf_points(ordered[:9900], refused=100, points=40)
    assert xs[-1] == 9900.0
    assert ys[-1] == pytest.approx(0.01)
    assert ccdf_points([], refused=5) == ([], [])


def test_p99_vs_oracle_may_name_the_policy_it_judges() -> None:
    """With a policy, p99-vs-oracle judges that one; without, the best stable balancer policy."""
    results = [
        _result("fast-but-unstable", 900, unstable=True, backlog_growth=40),
        _result("rr", 3000),
        _result("p2c", 1200),
        _result("oracle", 1000, reference=True),
    ]
    named, best = judge(
        [TargetSpec("p99-vs-oracle", 1.3, policy="rr"), TargetSpec("p99-vs-oracle", 1.3)],
        results,
        [],
    )
    assert named.measured == pytest.approx(3.0)
    assert named.met is False
    assert named.target.startswith("rr's p99")
    assert best.measured == pytest.approx(1.2)
    assert best.met is True
    assert best.detail.startswith("p2c")


def test_affinity_target_is_met_at_or_above_its_threshold() -> None:
    """An affinity target needs at least its share kept; nothing to measure is a miss."""
    results = [
        _result("sticky", 1000, affinity_kept=0.9, affinity_requests=50),
        _result("loose", 1000, affinity_kept=0.5, affinity_requests=50),
        _result("none", 1000),
    ]
    found = judge(
        [TargetSpec("affinity", 0.9, policy=name) for name in ("sticky", "loose", "none")],
        results,
        [],
    )
    assert [(t.measured, t.met, t.at_least) for t in found] == [
        (0.9, True, True),
        (0.5, False, True),
        (None, False, True),
    ]
    assert found[0].detail == "45 of 50 session requests kept"


def test_a_target_judged_on_an_unstable_run_is_missed() -> None:
    """Whatever it measured, a target on an unstable policy's run is missed, saying why."""
    results = [
        _result("p", 1000, unstable=True, backlog_growth=25, affinity_kept=1.0),
        _result("oracle", 1000, reference=True),
    ]
    found = judge(
        [
            TargetSpec("p99-vs-oracle", 1.3, policy="p"),
            TargetSpec("p99-ratio", 2, policy="p", baseline="oracle"),
            TargetSpec("affinity", 0.5, policy="p"),
        ],
        results,
        [],
    )
    assert [t.met for t in found] == [False, False, False]
    assert all(t.detail.startswith("unstable: p's backlog kept growing (+25") for t in found)
    # The unstable one is the baseline here, not the judged policy: judged as usual.
    (ratio,) = judge([TargetSpec("p99-ratio", 2, policy="oracle", baseline="p")], results, [])
    assert ratio.met is True


def test_over_runs_keeps_the_worst_value_and_needs_every_run_met() -> None:
    """Over seeds a target shows its worst measured value and is met only if met in all."""

    def target(measured: float | None, met: bool | None, at_least: bool = False) -> TargetResult:
        return TargetResult("k", "t", measured, 1.0, met, f"m={measured}", at_least)

    ratio, kept, skipped = over_runs(
        [
            [target(0.9, True), target(0.95, True, True), target(None, None)],
            [target(1.2, False), target(0.7, False, True), target(None, None)],
            [target(1.1, False), target(0.99, True, True), target(None, None)],
        ],
        ["seed 1", "seed 2", "seed 3"],
    )
    assert (ratio.measured, ratio.met) == (1.2, False)
    assert ratio.detail == "met in 1 of 3 (missed: seed 2, seed 3); worst seed 2: m=1.2"
    assert (kept.measured, kept.met) == (0.7, False)
    assert skipped.met is None
    (never,) = over_runs([[target(0.5, True)], [target(None, False)]], ["seed 1", "seed 2"])
    assert (never.measured, never.met) == (None, False)
    (held,) = over_runs([[target(0.5, True)], [target(0.8, True)]], ["seed 1", "seed 2"])
    assert (held.measured, held.met) == (0.8, True)

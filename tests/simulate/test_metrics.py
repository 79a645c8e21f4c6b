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
    percentile,
    summarise,
    traffic_shift,
)
from lb_service.simulate.policies import PolicySpec
from lb_service.simulate.scenario import Fault, TargetSpec
from lb_service.simulate.targets import judge
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
    """Latency counts measured successes, finishing late or not; throughput only in time."""
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
    # Responses: 1000 ms and 10,000 ms (it drains after the end); the failure is not one.
    assert result.latency_ms["p50"] == 1000
    assert result.latency_ms["p99"] == 10_000
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
    assert policy("least-connections-p2c").describe() == "least-connections (choice_count=2)"
    assert policy("oracle").describe() == "reference: oracle"
    assert PolicySpec("x", reference="random").config({}).choice_count == 2

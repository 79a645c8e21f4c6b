"""Targets a scenario declares, judged from the policies' results.

Kinds (``threshold`` is the bound the measured value must not exceed, except for
``affinity``, whose measured value must reach it):

- ``p99-vs-oracle``: ``policy``'s p99 / the oracle's p99; without ``policy``, that of the
  balancer policy with the lowest p99 (a stable one first, when there is one);
- ``p99-ratio``: ``policy``'s p99 / ``baseline``'s p99;
- ``traffic-shift``: seconds until ``policy`` moved traffic off a slowed agent
  (``threshold_s``; see ``metrics`` for the exact measure);
- ``ejection``: failed requests a failing agent took under ``policy`` before the balancer
  ejected it; the threshold is that policy's ``ejection_consecutive_failures``;
- ``affinity``: the share of session requests ``policy`` kept on their session's agent
  (*affinity kept* in ``metrics``); met when at least ``threshold``, missed when no
  request could be measured.

A target judged on an *unstable* run (see ``metrics``: the policy's backlog kept growing,
so its figures depend on how long the run was) is missed whatever it measured; its
detail starts with "unstable". A target whose policies were not run (``--policy`` chose
others) is *skipped*: reported, with ``met`` None, and not counted as missed.

Over several runs (``--seeds``), ``over_runs`` sums a target up: its worst measured
value (the highest; the lowest for ``affinity``; an unmeasured one is worse than any),
met only when met in every run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from lb_service.simulate.metrics import PolicyResult
from lb_service.simulate.policies import ORACLE
from lb_service.simulate.scenario import Fault, TargetSpec


@dataclass(frozen=True, slots=True)
class TargetResult:
    """One target: what it asks, the measured value, the threshold and whether it is met."""

    kind: str
    target: str
    measured: float | None
    threshold: float
    #: None when the target could not be judged in this run (skipped).
    met: bool | None
    detail: str
    #: True when the measured value must reach the threshold rather than stay within it.
    at_least: bool = False


def judge(
    specs: Sequence[TargetSpec], results: Sequence[PolicyResult], faults: Sequence[Fault]
) -> list[TargetResult]:
    """Judge every target against the results."""
    by_name = {r.name: r for r in results}
    return [_unstable(*_judge(spec, by_name, faults)) for spec in specs]


def _unstable(target: TargetResult, judged: PolicyResult | None) -> TargetResult:
    """Miss a judged target whose policy's run was unstable (module docstring)."""
    if judged is None or not judged.unstable or target.met is None:
        return target
    why = (
        f"unstable: {judged.name}'s backlog kept growing "
        f"(+{judged.backlog_growth:g} waiting from the second to the last quarter)"
    )
    return dataclasses.replace(target, met=False, detail=f"{why}; {target.detail}")


def _judge(
    spec: TargetSpec, by_name: dict[str, PolicyResult], faults: Sequence[Fault]
) -> tuple[TargetResult, PolicyResult | None]:
    """The target judged, and the policy result it was judged on (None when skipped)."""
    if spec.kind == "p99-vs-oracle":
        who = spec.policy or "best strategy"
        text = f"{who}'s p99 ≤ {spec.threshold:g}x the oracle's"
        oracle = next((r for r in by_name.values() if r.reference and r.name == ORACLE), None)
        if spec.policy:
            chosen = by_name.get(spec.policy)
            if oracle is None or chosen is None:
                return _skipped(spec, text, f"needs the oracle and {spec.policy}"), None
        else:
            candidates = [r for r in by_name.values() if not r.reference]
            if oracle is None or not candidates:
                why = "needs the oracle and at least one balancer policy"
                return _skipped(spec, text, why), None
            chosen = min(candidates, key=lambda r: (r.unstable, _finite(r.p99_ms)))
        ratio = chosen.p99_ms / oracle.p99_ms
        detail = f"{chosen.name} p99 {_s(chosen.p99_ms)} vs oracle {_s(oracle.p99_ms)}"
        return _result(spec, text, ratio, detail), chosen
    if spec.kind == "p99-ratio":
        text = f"{spec.policy} p99 ≤ {spec.threshold:g}x {spec.baseline}'s"
        policy, baseline = by_name.get(spec.policy), by_name.get(spec.baseline)
        if policy is None or baseline is None:
            return _skipped(spec, text, f"needs {spec.policy} and {spec.baseline}"), None
        ratio = policy.p99_ms / baseline.p99_ms
        detail = f"{_s(policy.p99_ms)} vs {_s(baseline.p99_ms)}"
        return _result(spec, text, ratio, detail), policy
    if spec.kind == "affinity":
        text = (
            f"{spec.policy} keeps ≥ {spec.threshold:.0%} of session requests on their "
            "session's agent"
        )
        result = by_name.get(spec.policy)
        if result is None:
            return _skipped(spec, text, f"needs {spec.policy}", at_least=True), None
        kept, of = result.affinity_kept, result.affinity_requests
        if not math.isfinite(kept):
            why = "no measured request followed a placed one of its session"
            return TargetResult(spec.kind, text, None, spec.threshold, False, why, True), result
        detail = f"{round(kept * of):,} of {of:,} session requests kept"
        met = kept >= spec.threshold
        return TargetResult(spec.kind, text, kept, spec.threshold, met, detail, True), result
    return _judge_fault(spec, by_name, faults)


def _judge_fault(
    spec: TargetSpec, by_name: dict[str, PolicyResult], faults: Sequence[Fault]
) -> tuple[TargetResult, PolicyResult | None]:
    fault = _fault(spec, faults)
    if spec.kind == "traffic-shift":
        text = f"{spec.policy} moves traffic off a slowed agent within {spec.threshold:g} s"
        result = by_name.get(spec.policy)
        if result is None or fault is None:
            return _skipped(spec, text, f"needs {spec.policy} and a slow fault"), None
        shift = next(
            s for s in result.shifts if (s.agent_id, s.at_s) == (fault.agent_id, fault.at_s)
        )
        detail = (
            f"{fault.agent_id} x{fault.factor:g} at {fault.at_s:g} s: share "
            f"{shift.before_share:.1%} before, {shift.after_share:.1%} after"
        )
        if shift.shift_s is None:
            missed = TargetResult(
                spec.kind, text, None, spec.threshold, False, f"never halved; {detail}"
            )
            return missed, result
        return _result(spec, text, shift.shift_s, detail), result
    text = f"{spec.policy} ejects a failing agent within its consecutive-failure threshold"
    result = by_name.get(spec.policy)
    if result is None or fault is None:
        return _skipped(spec, text, f"needs {spec.policy} and a fail fault"), None
    ejection = next(
        (e for e in result.ejections if (e.agent_id, e.at_s) == (fault.agent_id, fault.at_s)), None
    )
    if ejection is None or ejection.threshold == 0:
        off = TargetResult(
            spec.kind, text, None, 0, False, f"outlier ejection is off for {spec.policy}"
        )
        return off, result
    detail = (
        f"{fault.agent_id} failing from {fault.at_s:g} s: "
        f"{ejection.sent_before_ejection} failing request(s) sent to it before ejection"
    )
    if ejection.ejected_after_s is None:
        never = TargetResult(
            spec.kind,
            text,
            float(ejection.failures_before_ejection),
            ejection.threshold,
            False,
            f"never ejected; {detail}",
        )
        return never, result
    judged = _result(
        TargetSpec(spec.kind, ejection.threshold, spec.policy),
        text,
        float(ejection.failures_before_ejection),
        f"{detail}, ejected after {ejection.ejected_after_s:.2f} s",
    )
    return judged, result


def over_runs(runs: Sequence[Sequence[TargetResult]], labels: Sequence[str]) -> list[TargetResult]:
    """Each target over several runs of the same scenario (module docstring).

    ``runs`` holds each run's judged targets in the scenario's order, ``labels`` names
    each run (e.g. "seed 3") in the detail of the worst one.
    """
    summed = []
    for group in zip(*runs, strict=True):
        worst = max(range(len(group)), key=lambda n: _badness(group[n]))
        verdicts = [t.met for t in group]
        met = False if False in verdicts else None if None in verdicts else True
        held = sum(1 for v in verdicts if v)
        missed = [labels[n] for n, v in enumerate(verdicts) if v is False]
        where = f" (missed: {', '.join(missed)})" if missed else ""
        summed.append(
            dataclasses.replace(
                group[worst],
                met=met,
                detail=f"met in {held} of {len(group)}{where}; worst {labels[worst]}: "
                f"{group[worst].detail}",
            )
        )
    return summed


def _badness(target: TargetResult) -> tuple[int, float]:
    """Orders a target's runs from best to worst: unmeasured ones are the worst."""
    measured = target.measured
    if measured is None or math.isnan(measured):
        return (1, 0.0)
    return (0, -measured if target.at_least else measured)


def _fault(spec: TargetSpec, faults: Sequence[Fault]) -> Fault | None:
    kind = "slow" if spec.kind == "traffic-shift" else "fail"
    if spec.fault >= 0:
        fault = faults[spec.fault] if spec.fault < len(faults) else None
        return fault if fault is not None and fault.kind == kind else None
    return next((f for f in faults if f.kind == kind), None)


def _result(spec: TargetSpec, text: str, measured: float, detail: str) -> TargetResult:
    met = math.isfinite(measured) and measured <= spec.threshold
    return TargetResult(spec.kind, text, measured, spec.threshold, met, detail)


def _skipped(spec: TargetSpec, text: str, why: str, at_least: bool = False) -> TargetResult:
    return TargetResult(spec.kind, text, None, spec.threshold, None, f"skipped: {why}", at_least)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _s(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if math.isfinite(ms) else "n/a"

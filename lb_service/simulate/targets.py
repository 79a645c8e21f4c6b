"""Targets a scenario declares, judged from the policies' results.

Kinds (``threshold`` is the bound the measured value must not exceed):

- ``p99-vs-oracle``: the best balancer policy's p99 / the oracle's p99;
- ``p99-ratio``: ``policy``'s p99 / ``baseline``'s p99;
- ``traffic-shift``: seconds until ``policy`` moved traffic off a slowed agent
  (``threshold_s``; see ``metrics`` for the exact measure);
- ``ejection``: failed requests a failing agent took under ``policy`` before the balancer
  ejected it; the threshold is that policy's ``ejection_consecutive_failures``.

A target whose policies were not run (``--policy`` chose others) is *skipped*: reported,
with ``met`` None, and not counted as missed.
"""

from __future__ import annotations

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


def judge(
    specs: Sequence[TargetSpec], results: Sequence[PolicyResult], faults: Sequence[Fault]
) -> list[TargetResult]:
    """Judge every target against the results."""
    by_name = {r.name: r for r in results}
    return [_judge(spec, by_name, faults) for spec in specs]


def _judge(
    spec: TargetSpec, by_name: dict[str, PolicyResult], faults: Sequence[Fault]
) -> TargetResult:
    if spec.kind == "p99-vs-oracle":
        text = f"best strategy's p99 ≤ {spec.threshold:g}x the oracle's"
        oracle = next((r for r in by_name.values() if r.reference and r.name == ORACLE), None)
        candidates = [r for r in by_name.values() if not r.reference]
        if oracle is None or not candidates:
            return _skipped(spec, text, "needs the oracle and at least one balancer policy")
        best = min(candidates, key=lambda r: _finite(r.p99_ms))
        ratio = best.p99_ms / oracle.p99_ms
        return _result(
            spec,
            text,
            ratio,
            f"{best.name} p99 {_s(best.p99_ms)} vs oracle {_s(oracle.p99_ms)}",
        )
    if spec.kind == "p99-ratio":
        text = f"{spec.policy} p99 ≤ {spec.threshold:g}x {spec.baseline}'s"
        policy, baseline = by_name.get(spec.policy), by_name.get(spec.baseline)
        if policy is None or baseline is None:
            return _skipped(spec, text, f"needs {spec.policy} and {spec.baseline}")
        ratio = policy.p99_ms / baseline.p99_ms
        return _result(spec, text, ratio, f"{_s(policy.p99_ms)} vs {_s(baseline.p99_ms)}")
    fault = _fault(spec, faults)
    if spec.kind == "traffic-shift":
        text = f"{spec.policy} moves traffic off a slowed agent within {spec.threshold:g} s"
        result = by_name.get(spec.policy)
        if result is None or fault is None:
            return _skipped(spec, text, f"needs {spec.policy} and a slow fault")
        shift = next(
            s for s in result.shifts if (s.agent_id, s.at_s) == (fault.agent_id, fault.at_s)
        )
        detail = (
            f"{fault.agent_id} x{fault.factor:g} at {fault.at_s:g} s: share "
            f"{shift.before_share:.1%} before, {shift.after_share:.1%} after"
        )
        if shift.shift_s is None:
            return TargetResult(
                spec.kind, text, None, spec.threshold, False, f"never halved; {detail}"
            )
        return _result(spec, text, shift.shift_s, detail)
    text = f"{spec.policy} ejects a failing agent within its consecutive-failure threshold"
    result = by_name.get(spec.policy)
    if result is None or fault is None:
        return _skipped(spec, text, f"needs {spec.policy} and a fail fault")
    ejection = next(
        (e for e in result.ejections if (e.agent_id, e.at_s) == (fault.agent_id, fault.at_s)), None
    )
    if ejection is None or ejection.threshold == 0:
        return TargetResult(
            spec.kind, text, None, 0, False, f"outlier ejection is off for {spec.policy}"
        )
    detail = (
        f"{fault.agent_id} failing from {fault.at_s:g} s: "
        f"{ejection.sent_before_ejection} failing request(s) sent to it before ejection"
    )
    if ejection.ejected_after_s is None:
        return TargetResult(
            spec.kind,
            text,
            float(ejection.failures_before_ejection),
            ejection.threshold,
            False,
            f"never ejected; {detail}",
        )
    return _result(
        TargetSpec(spec.kind, ejection.threshold, spec.policy),
        text,
        float(ejection.failures_before_ejection),
        f"{detail}, ejected after {ejection.ejected_after_s:.2f} s",
    )


def _fault(spec: TargetSpec, faults: Sequence[Fault]) -> Fault | None:
    kind = "slow" if spec.kind == "traffic-shift" else "fail"
    if spec.fault >= 0:
        fault = faults[spec.fault] if spec.fault < len(faults) else None
        return fault if fault is not None and fault.kind == kind else None
    return next((f for f in faults if f.kind == kind), None)


def _result(spec: TargetSpec, text: str, measured: float, detail: str) -> TargetResult:
    met = math.isfinite(measured) and measured <= spec.threshold
    return TargetResult(spec.kind, text, measured, spec.threshold, met, detail)


def _skipped(spec: TargetSpec, text: str, why: str) -> TargetResult:
    return TargetResult(spec.kind, text, None, spec.threshold, None, f"skipped: {why}")


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _s(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if math.isfinite(ms) else "n/a"

"""The ``targets`` section: what a run must achieve, read and checked against the scenario.

A target is read here and judged after the run by ``lb_service/simulate/targets.py``
(which says what each kind measures). ``check_targets`` refuses, before anything runs,
a target that could never be judged: one naming a policy the scenario does not run, or
measuring a fault or sessions the scenario does not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lb_service.simulate.document import Node, ScenarioError
from lb_service.simulate.policies import PolicySpec
from lb_service.simulate.scenario.types import TARGET_KINDS, Fault, TargetSpec, Workload


def read_target(node: Node) -> TargetSpec:
    """One ``targets`` entry: its kind, threshold and the policies or fault it names."""
    kind = node.string("kind", None)
    if kind not in TARGET_KINDS:
        raise ScenarioError(
            f"{node.path}.kind", f"must be one of {', '.join(TARGET_KINDS)}, got {kind!r}"
        )
    if kind == "p99-vs-oracle":
        node.only("kind", "threshold", "policy")
        # Without a policy, the balancer policy with the lowest p99 is judged.
        return TargetSpec(
            kind,
            node.number("threshold", None, low=0, low_open=True),
            policy=node.string("policy", ""),
        )
    if kind == "affinity":
        node.only("kind", "threshold", "policy")
        return TargetSpec(
            kind,
            node.number("threshold", None, low=0, high=1),
            policy=node.string("policy", None),
        )
    if kind == "p99-ratio":
        node.only("kind", "threshold", "policy", "baseline")
        return TargetSpec(
            kind,
            node.number("threshold", None, low=0, low_open=True),
            policy=node.string("policy", None),
            baseline=node.string("baseline", None),
        )
    if kind == "traffic-shift":
        node.only("kind", "threshold_s", "policy", "fault")
        return TargetSpec(
            kind,
            node.number("threshold_s", None, low=0, low_open=True),
            policy=node.string("policy", None),
            fault=node.integer("fault", -1, low=0),
        )
    node.only("kind", "policy", "fault")
    # The threshold is the policy's own ejection_consecutive_failures, read at judging.
    return TargetSpec(
        kind, math.nan, policy=node.string("policy", None), fault=node.integer("fault", -1, low=0)
    )


def check_targets(
    targets: Sequence[TargetSpec],
    policies: Sequence[PolicySpec],
    faults: Sequence[Fault],
    workload: Workload,
) -> None:
    """Targets must name policies the scenario runs and what they measure must happen."""
    names = [p.name for p in policies]
    for n, target in enumerate(targets):
        for key in ("policy", "baseline"):
            name = getattr(target, key)
            if name and name not in names:
                raise ScenarioError(
                    f"targets[{n}].{key}",
                    f"policy {name!r} is not run by this scenario ({', '.join(names)})",
                )
        if target.kind == "p99-vs-oracle" and "oracle" not in names:
            raise ScenarioError(f"targets[{n}].kind", "needs the oracle policy in policies")
        if target.kind == "affinity" and not workload.session_share:
            raise ScenarioError(
                f"targets[{n}].kind", "needs sessions in the workload (workload.sessions.share)"
            )
        if target.kind in ("traffic-shift", "ejection"):
            kind = "slow" if target.kind == "traffic-shift" else "fail"
            if target.fault >= 0:
                if target.fault >= len(faults) or faults[target.fault].kind != kind:
                    raise ScenarioError(
                        f"targets[{n}].fault", f"must be the index of a {kind} fault in faults"
                    )
            elif not any(f.kind == kind for f in faults):
                raise ScenarioError(f"targets[{n}].kind", f"needs a {kind} fault in faults")

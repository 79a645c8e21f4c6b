"""The ``faults`` section: what happens to which agent, and when (``slow``, ``fail``, ``join``).

``Fault`` (in ``types``) says what each kind does; the engine replays them
(``lb_service/simulate/engine``).
"""

from __future__ import annotations

import math

from lb_service.simulate.document import Node, ScenarioError
from lb_service.simulate.scenario.types import FAULT_KINDS, Fault


def read_faults(node: Node, ids: set[str]) -> tuple[Fault, ...]:
    """The ``faults`` section: each entry read, then at most one join and one fail per agent."""
    faults = tuple(read_fault(entry, ids) for entry in node.items())
    for n, fault in enumerate(faults):
        # One join per agent, and one fail fault: ejection is watched once per agent.
        if fault.kind in ("join", "fail") and any(
            (f.kind, f.agent_id) == (fault.kind, fault.agent_id) for f in faults[:n]
        ):
            raise ScenarioError(
                f"faults[{n}].agent", f"{fault.agent_id!r} has more than one {fault.kind} fault"
            )
    return faults


def read_fault(node: Node, ids: set[str]) -> Fault:
    """One ``faults`` entry; ``ids`` are the cluster's agent ids, one of which it must name."""
    node.only("agent", "kind", "at_s", "until_s", "factor", "fail_ms", "in_flight")
    agent_id = node.string("agent", None)
    if agent_id not in ids:
        raise ScenarioError(f"{node.path}.agent", f"no agent {agent_id!r} in the cluster")
    kind = node.string("kind", None)
    if kind not in FAULT_KINDS:
        raise ScenarioError(
            f"{node.path}.kind", f"must be one of {', '.join(FAULT_KINDS)}, got {kind!r}"
        )
    at_s = node.number("at_s", None, low=0)
    if kind == "join":
        node.only("agent", "kind", "at_s")
        return Fault(agent_id, kind, at_s)
    until_s = node.number("until_s", math.inf, low=at_s, low_open=True)
    if kind == "slow":
        node.only("agent", "kind", "at_s", "until_s", "factor")
        return Fault(
            agent_id, kind, at_s, until_s, factor=node.number("factor", None, low=0, low_open=True)
        )
    node.only("agent", "kind", "at_s", "until_s", "fail_ms", "in_flight")
    in_flight = node.string("in_flight", "fail")
    if in_flight not in ("fail", "finish"):
        raise ScenarioError(f"{node.path}.in_flight", f"must be fail or finish, got {in_flight!r}")
    return Fault(
        agent_id,
        kind,
        at_s,
        until_s,
        fail_ms=node.number("fail_ms", 5.0, low=0),
        in_flight=in_flight,
    )

"""Small scenario documents and hand-made request streams for the simulator tests."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from lb_service.simulate.engine import PolicyRun, run_policy
from lb_service.simulate.policies import DEFAULT_POLICIES, PolicySpec
from lb_service.simulate.scenario import Scenario, parse
from lb_service.simulate.workload import Requests

_BASE: dict[str, Any] = {
    "name": "tiny",
    "duration_s": 10,
    "models": {"m": {"service_ms": {"median": 100, "p99": 400}}},
    "cluster": [{"id": "a", "count": 2, "models": ["m"], "speed": 1.0, "slots": 1}],
    "workload": {"rate_per_s": 5, "mix": [{"model": "m", "share": 1}]},
    "policies": ["round-robin", "oracle"],
}


def document(**sections: Any) -> dict[str, Any]:
    """A valid scenario document: one model, two equal one-slot agents, 5 requests/s."""
    found = copy.deepcopy(_BASE)
    found.update(sections)
    return found


def scenario(**sections: Any) -> Scenario:
    """The scenario of ``document(**sections)``."""
    return parse(document(**sections))


def requests(
    arrivals: Sequence[tuple[float, float]],
    dispatcher: Sequence[int] = (),
    kind: Sequence[int] = (),
    session: Sequence[str] = (),
    bypass: Sequence[int] = (),
) -> Requests:
    """A request stream from (arrival ms, size ms on a speed-1.0 agent) pairs.

    ``bypass``: per request, the agent it goes to directly (-1: balanced); none: all balanced.
    """
    n = len(arrivals)
    return Requests(
        arrival_ms=[a for a, _ in arrivals],
        kind=list(kind) or [0] * n,
        base_ms=[b for _, b in arrivals],
        session=list(session) or [""] * n,
        dispatcher=list(dispatcher) or [0] * n,
        rate_per_s=1.0,
        capacity_per_s=1.0,
        bypass=list(bypass),
    )


def policy(name: str) -> PolicySpec:
    """A built-in policy by name."""
    return next(p for p in DEFAULT_POLICIES if p.name == name)


async def run(sim: Scenario, stream: Requests, spec: PolicySpec | str, seed: int = 1) -> PolicyRun:
    """Run one policy over the stream."""
    return await run_policy(sim, stream, policy(spec) if isinstance(spec, str) else spec, seed)

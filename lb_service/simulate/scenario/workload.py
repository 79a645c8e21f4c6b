"""The ``workload`` section: arrival rate or utilisation, the mix, sessions, bursts, dispatchers.

Only the description is read here; ``lb_service/simulate/workload.py`` turns it into the
stream of requests a run replays.
"""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.model import Compute, Task
from lb_service.requirements import meets
from lb_service.simulate.document import Node, ScenarioError
from lb_service.simulate.scenario.types import (
    Burst,
    Bypass,
    Dispatcher,
    RequestType,
    SimAgent,
    Workload,
)

#: Most entries in workload.mix: capacity is computed over every subset of them.
MAX_MIX = 12


def read_workload(node: Node, agents: Sequence[SimAgent]) -> Workload:
    """The ``workload`` section; ``agents`` are the cluster, which every request type must fit."""
    node.only("utilisation", "rate_per_s", "mix", "sessions", "bursts", "dispatchers", "bypass")
    if node.has("utilisation") == node.has("rate_per_s"):
        raise ScenarioError(node.path, "give exactly one of utilisation and rate_per_s")
    utilisation = rate = None
    if node.has("utilisation"):
        utilisation = node.number("utilisation", None, low=0, low_open=True, high=2.0)
    else:
        rate = node.number("rate_per_s", None, low=0, low_open=True)
    mix_node = node.child("mix", required=True)
    mix = []
    for entry in mix_node.items():
        entry.only("model", "share", "min_vram_gb", "compute")
        compute_text = entry.string("compute", "any")
        try:
            compute = Compute(compute_text)
        except ValueError:
            raise ScenarioError(
                f"{entry.path}.compute",
                f"must be one of {', '.join(c.value for c in Compute)}, got {compute_text!r}",
            ) from None
        task = Task(
            model=entry.string("model", None),
            min_vram_gb=entry.number("min_vram_gb", 0.0, low=0),
            compute=compute,
        )
        if not any(meets(a.agent, task) for a in agents) and utilisation is not None:
            # With a utilisation the rate comes from capacity, which such a request has none of.
            raise ScenarioError(
                entry.path,
                "no agent in the cluster can take this request, so no utilisation can be "
                "reached; fix the cluster or give rate_per_s instead",
            )
        mix.append(RequestType(task, entry.number("share", None, low=0, low_open=True)))
    if not mix:
        raise ScenarioError(mix_node.path, "must list at least one request type")
    if len(mix) > MAX_MIX:
        raise ScenarioError(mix_node.path, f"at most {MAX_MIX} entries, got {len(mix)}")
    total = sum(t.share for t in mix)
    # Shares are relative weights: "60, 30, 10" and "0.6, 0.3, 0.1" mean the same.
    mix = [RequestType(t.task, t.share / total) for t in mix]
    sessions = node.child("sessions", default={})
    sessions.only("share", "pool")
    session_share = sessions.number("share", 0.0, low=0, high=1)
    pool = sessions.integer("pool", 100 if session_share else 0, low=0)
    if session_share and not pool:
        raise ScenarioError(f"{sessions.path}.pool", "must be at least 1 when share > 0")
    bursts = []
    for entry in node.child("bursts", default=[]).items():
        entry.only("at_s", "duration_s", "factor")
        bursts.append(
            Burst(
                entry.number("at_s", None, low=0),
                entry.number("duration_s", None, low=0, low_open=True),
                entry.number("factor", None, low=0),
            )
        )
    dispatchers = []
    for entry in node.child("dispatchers", default=[]).items():
        entry.only("count", "share", "report_delay_ms")
        count = entry.integer("count", 1, low=1, high=1000)
        share = entry.number("share", float(count), low=0, low_open=True)
        delay = entry.number("report_delay_ms", 0.0, low=0)
        dispatchers += [Dispatcher(share / count, delay)] * count
    if not dispatchers:
        dispatchers = [Dispatcher(1.0, 0.0)]
    total = sum(d.share for d in dispatchers)
    bypass = _bypass(node.child("bypass", default=None), agents)
    return Workload(
        mix=tuple(mix),
        dispatchers=tuple(Dispatcher(d.share / total, d.report_delay_ms) for d in dispatchers),
        utilisation=utilisation,
        rate_per_s=rate,
        session_share=session_share,
        session_pool=pool,
        bursts=tuple(bursts),
        bypass=bypass,
    )


def _bypass(node: Node, agents: Sequence[SimAgent]) -> Bypass | None:
    """The ``bypass`` section: ``{share, agents, during}``.

    ``agents``: agent ids, or cluster entries' ids (all their agents); ``during``:
    ``[{at_s, duration_s}]``, the windows it happens in (default: always).
    """
    if node.value is None:
        return None
    node.only("share", "agents", "during")
    share = node.number("share", None, low=0, high=1)
    during = []
    for window in node.child("during", default=[]).items():
        window.only("at_s", "duration_s")
        start = window.number("at_s", None, low=0)
        during.append((start, start + window.number("duration_s", None, low=0, low_open=True)))
    ids = [a.agent.id for a in agents]
    chosen: list[str] = []
    for entry in node.child("agents", default=[]).items():
        name = entry.text()
        matched = [i for i in ids if i == name or i.rsplit("-", 1)[0] == name]
        if not matched:
            raise ScenarioError(entry.path, f"no agent or cluster entry is named {name!r}")
        chosen += [i for i in matched if i not in chosen]
    return Bypass(share, tuple(chosen or ids), tuple(during))

"""Reported load: what agents' fresh load reports change in a decision (``lb_service.reports``).

Run only when some agent has a fresh report; with none, a decision is exactly what it
was without reports. Three steps:

- **load** (``with_unseen``): a candidate's open requests gain what its agent reported
  beyond the service's own leases (``ReceivedReport.unseen``): requests that bypassed
  the balancer, or that its dispatchers never reported. The room step still counts
  leases only: ``max_connections`` caps what the service grants.
- **saturation** (``unsaturated``): candidates whose report says they are full (a queue
  of ``Saturation.queue`` or a KV cache ``Saturation.kv_cache`` full) are skipped while
  another has room. When every one is saturated the decision fails open to the least
  saturated (a request queued on the least full agent beats one refused), or refuses
  with ``RefusalKind.ALL_SATURATED`` when the user asked for that.
- **residency** (``residents``): among the options, those whose report lists the task's
  model as loaded take the request, as long as they are within the load bound sticky
  sessions obey (``capacity.within_bound``): a model that must be loaded first costs
  seconds to minutes, but a loaded one on an overloaded agent costs more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.capacity import within_bound
from lb_service.decision.outcome import Refusal, RefusalKind
from lb_service.reports import ReceivedReport, Saturation, resident, saturation
from lb_service.strategies import Candidate


def with_unseen(
    candidates: Sequence[Candidate], reports: Mapping[str, ReceivedReport]
) -> Sequence[Candidate]:
    """The candidates with their reported unseen load added (the same list when none has any)."""
    if not any(reports.get(c.agent.id) is not None for c in candidates):
        return candidates
    adjusted = []
    for candidate in candidates:
        received = reports.get(candidate.agent.id)
        unseen = 0 if received is None else received.unseen
        adjusted.append(
            candidate._replace(active=candidate.active + unseen) if unseen else candidate
        )
    return adjusted


def unsaturated(
    candidates: Sequence[Candidate],
    reports: Mapping[str, ReceivedReport],
    limits: Saturation,
    refuse: bool,
) -> Sequence[Candidate] | Refusal:
    """The candidates not saturated; if every one is, the least saturated, or a refusal."""
    levels = [
        (saturation(received.report, limits) if received is not None else 0.0)
        for received in (reports.get(c.agent.id) for c in candidates)
    ]
    room = [c for c, level in zip(candidates, levels, strict=True) if level < 1.0]
    if room or not candidates:
        return candidates if len(room) == len(candidates) else room
    if refuse:
        return Refusal(
            RefusalKind.ALL_SATURATED,
            f"all {len(candidates)} eligible agent(s) report a queue of {limits.queue} or more "
            f"or a KV cache {limits.kv_cache:.0%} full or more; retry later",
        )
    least = min(levels)
    return [c for c, level in zip(candidates, levels, strict=True) if level == least]


def residents(
    options: Sequence[Candidate],
    model: str,
    reports: Mapping[str, ReceivedReport],
    total_active: int,
    total_capacity: float,
    factor: float,
) -> Sequence[Candidate]:
    """The options holding ``model`` in memory and within the load bound; all when none is."""
    if not model:
        return options
    loaded = [
        c
        for c in options
        if (received := reports.get(c.agent.id)) is not None
        and resident(received.report, model)
        and within_bound(c.active, c.capacity, total_active, total_capacity, factor)
    ]
    return loaded or options

"""Reported load: what agents' fresh load reports change in a decision (``lb_service.reports``).

Run only when some agent has a fresh report; with none, a decision is exactly what it
was without reports. Three rules:

- **load** (``with_unseen``): a candidate's open requests gain what its agent reported
  beyond the service's own leases (``ReceivedReport.unseen``): requests that bypassed
  the balancer, or that its dispatchers never reported. The room step still counts
  leases only: ``max_connections`` caps what the service grants.
- **residency** (``narrow``): the agents whose report lists the task's model take the
  request while they are within the load bound sticky sessions obey
  (``capacity.within_bound``), or have a slot free: a model that must be loaded first
  costs seconds to minutes, but a loaded one on an overloaded agent costs more.
- **saturation** (``narrow``): an agent whose report says it is full (a queue of
  ``Saturation.queue`` or a KV cache ``Saturation.kv_cache`` full) is skipped while
  another of the same preference has room. Among the agents holding the model, all
  saturated but within the bound, the least saturated takes the request: sending it to
  an agent that must load the model instead turned every queue into a model swap, and a
  simulated Ollama fleet into one that never caught up. With no agent holding the
  model, saturated agents are skipped while any other has room; when every one is
  saturated the decision fails open to the least saturated (a request queued on the
  least full agent is served sooner than one refused), or refuses with
  ``RefusalKind.ALL_SATURATED`` when the user asked for that.
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


def is_saturated(
    candidate: Candidate, reports: Mapping[str, ReceivedReport], limits: Saturation
) -> bool:
    """Whether the candidate's fresh report says it is full."""
    return _level(candidate, reports, limits) >= 1.0


def lost_model(candidate: Candidate, model: str, reports: Mapping[str, ReceivedReport]) -> bool:
    """Whether the candidate's fresh report lists models, and ``model`` is not among them.

    A session's agent that evicted the session's model has lost the session's cached
    context with it: keeping the session there buys a model load, not a cache hit.
    """
    received = reports.get(candidate.agent.id)
    if received is None or not model or not received.report.loaded_models:
        return False
    return not resident(received.report, model)


def narrow(
    options: Sequence[Candidate],
    model: str,
    reports: Mapping[str, ReceivedReport],
    limits: Saturation,
    refuse: bool,
    total_active: int,
    total_capacity: float,
    factor: float,
) -> Sequence[Candidate] | Refusal:
    """The options the strategy ranks: residents within the bound first, then by saturation.

    ``model`` empty (no model asked, or residency preference off): saturation alone.
    """
    if model:
        loaded = [
            c
            for c in options
            if (received := reports.get(c.agent.id)) is not None
            and resident(received.report, model)
            and (
                c.active < c.slot_count
                or within_bound(c.active, c.capacity, total_active, total_capacity, factor)
            )
        ]
        if loaded:
            return _least_saturated(loaded, reports, limits)
    return _unsaturated(options, reports, limits, refuse)


def _unsaturated(
    candidates: Sequence[Candidate],
    reports: Mapping[str, ReceivedReport],
    limits: Saturation,
    refuse: bool,
) -> Sequence[Candidate] | Refusal:
    """The candidates not saturated; if every one is, the least saturated, or a refusal."""
    room = [c for c in candidates if _level(c, reports, limits) < 1.0]
    if room or not candidates:
        return candidates if len(room) == len(candidates) else room
    if refuse:
        return Refusal(
            RefusalKind.ALL_SATURATED,
            f"all {len(candidates)} eligible agent(s) report a queue of {limits.queue} or more "
            f"or a KV cache {limits.kv_cache:.0%} full or more; retry later",
        )
    return _least_saturated(candidates, reports, limits)


def _least_saturated(
    candidates: Sequence[Candidate], reports: Mapping[str, ReceivedReport], limits: Saturation
) -> Sequence[Candidate]:
    """The unsaturated candidates, or with none the least saturated (all of them tied)."""
    levels = [_level(c, reports, limits) for c in candidates]
    room = [c for c, level in zip(candidates, levels, strict=True) if level < 1.0]
    if room:
        return room
    least = min(levels)
    return [c for c, level in zip(candidates, levels, strict=True) if level == least]


def _level(
    candidate: Candidate, reports: Mapping[str, ReceivedReport], limits: Saturation
) -> float:
    received = reports.get(candidate.agent.id)
    return 0.0 if received is None else saturation(received.report, limits)

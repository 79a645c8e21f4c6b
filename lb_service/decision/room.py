"""Room: agents at max_connections are skipped; untrusted agents take one request at a time."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.capacity import EXPLORE_LIMIT
from lb_service.strategies import Candidate


def with_room(candidates: Sequence[Candidate]) -> Sequence[Candidate]:
    """The candidates below their ``max_connections`` (0 = no limit)."""
    if not any(c.agent.max_connections for c in candidates):
        return candidates
    return [
        c for c in candidates if not c.agent.max_connections or c.active < c.agent.max_connections
    ]


def explore_bounded(candidates: Sequence[Candidate]) -> Sequence[Candidate]:
    """Bounded exploration: an untrusted agent holding ``EXPLORE_LIMIT`` requests is skipped.

    Only while some trusted agent remains: until then every agent is new and the
    hardware guesses are all there is to go by. An agent is untrusted until its first
    few completions (``capacity.TRUST_COMPLETIONS``): it is measured without taking
    the traffic its guess (or, under latency-based, its missing latency) would send it.
    """
    if all(c.trusted for c in candidates) or not any(c.trusted for c in candidates):
        return candidates
    return [c for c in candidates if c.trusted or c.active < EXPLORE_LIMIT]

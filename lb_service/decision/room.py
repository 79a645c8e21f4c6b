"""Room: agents at max_connections are skipped; untrusted agents are explored a bit at a time."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.capacity import EXPLORE_LIMIT, release_limit, releases
from lb_service.strategies import Candidate
from lb_service.strategies.base import expected_time


def with_room(candidates: Sequence[Candidate]) -> Sequence[Candidate]:
    """The candidates below their ``max_connections`` (0 = no limit)."""
    if not any(c.agent.max_connections for c in candidates):
        return candidates
    return [
        c for c in candidates if not c.agent.max_connections or c.active < c.agent.max_connections
    ]


def explore_bounded(candidates: Sequence[Candidate], factor: float) -> Sequence[Candidate]:
    """Bounded exploration: an untrusted agent holding ``EXPLORE_LIMIT`` requests is skipped.

    Only while some trusted agent remains: until then every agent is new and the
    hardware guesses are all there is to go by. An agent is untrusted until its first
    few completions (``capacity.TRUST_COMPLETIONS``): it is measured without taking
    the traffic its guess (or, under latency-based, its missing latency) would send it.

    And only while the agents left in can take the request within ``factor`` (the
    ``balance_factor`` option, which bounds sticky sessions the same way) of the shortest
    expected time (``strategies.base.expected_time``) a held-back agent with a guessed
    slot free offers by its guess, without the credit that gets it measured
    (``capacity.UNTRUSTED_CREDIT``): giving an agent more than one request should rest on
    what it is expected to do, not on optimism. An untrusted agent stays so until its
    first requests end: on an Ollama fleet whose agents start empty, each new agent's
    first request waits for a 15 s model load, and without this release every other
    request queued on the one agent that had finished three, 45 deep after 20 s while
    five agents held one request each (``swap`` at 60% load, seed 3: p99 8.9x the
    oracle's). Released, those agents are ranked with the others up to their guessed
    slots, never into a queue on a guess (a guess may be far off), and the release ends
    once the gap closes. On fleets whose agents are soon trusted it seldom comes into
    play: the shipped ``equal`` fleet (seeds 1-15) and ``bypass`` at 85% (seeds 1-15)
    ran request for request as before it.
    """
    if all(c.trusted for c in candidates) or not any(c.trusted for c in candidates):
        return candidates
    kept = [c for c in candidates if c.trusted or c.active < EXPLORE_LIMIT]
    if len(kept) == len(candidates):
        return candidates
    released = [c for c in candidates if c.trusted or c.active < release_limit(c.slot_count)]
    if len(released) == len(kept):
        return kept
    kept_shortest = min(map(expected_time, kept))
    return released if releases(kept_shortest, min(map(expected_time, released)), factor) else kept

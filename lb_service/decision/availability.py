"""Availability: agents out by outlier ejection take no picks, unless all of them are out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.strategies import Candidate


def available(
    candidates: Sequence[Candidate], ejections: Mapping[str, int], now_ms: int
) -> Sequence[Candidate]:
    """The candidates not ejected at ``now_ms``; all of them when every one is (fail open).

    Failing open: when every eligible agent is ejected, ejection would refuse all
    traffic, which is worse than sending it to agents that may fail (Envoy's panic
    threshold at its extreme).
    """
    if not ejections:
        return candidates
    kept = [c for c in candidates if ejections.get(c.agent.id, 0) <= now_ms]
    return kept or candidates

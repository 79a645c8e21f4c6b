"""Health: draining agents take no picks; unhealthy ones none while a healthy one is eligible.

When every eligible agent that is not draining is unhealthy, they are picked among all
the same (panic mode, Envoy's panic threshold at its extreme): lb-service is off the
data path, so a failure only its probes see (a partition between it and the agents
that dispatchers do not share) must not take the whole fleet out. Draining agents are
never picked: a drain is an operator's explicit word, and when every eligible agent is
draining the pick is refused, naming the cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lb_service.decision.outcome import Refusal, RefusalKind
from lb_service.model import Agent, AgentHealth

_DRAINING = AgentHealth.DRAINING


def healthy(
    agents: Sequence[Agent], out: Mapping[str, AgentHealth]
) -> tuple[Sequence[Agent], bool] | Refusal:
    """The agents that may take the pick, and whether that is a panic (all of them unhealthy)."""
    if not out:
        return agents, False
    undrained = [a for a in agents if out.get(a.id) is not _DRAINING]
    if not undrained:
        return Refusal(
            RefusalKind.ALL_DRAINING,
            f"all {len(agents)} eligible agent(s) are draining; undrain one "
            "(lb-service drain AGENT --undo) or register another",
        )
    fit = [a for a in undrained if a.id not in out]
    if fit:
        return fit, False
    return undrained, True

"""The reference policies, which pick without the balancer: ``random`` and ``oracle``.

``random`` draws uniformly among the eligible agents with room, the floor any strategy
should beat. ``oracle`` knows every agent's queue, the request's service time on each and
which agents are failing, and picks the one that will finish the request first: greedy
(the earliest finish for this request, not the best schedule for all of them) and blind
to sticky sessions, so a practical "best possible", not a proven optimum.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from lb_service.simulate.engine.agents import AgentState
from lb_service.simulate.policies import ORACLE


def reference_pick(
    reference: str | None,
    rng: random.Random,
    agents: Sequence[AgentState],
    eligible: Sequence[int],
    base_ms: float,
    now: float,
) -> int | str:
    """The index of the agent ``reference`` picks, or the reason it refuses (as counted).

    ``eligible`` are the indices of the registered agents that meet the request's task;
    ``base_ms`` is the request's service time on a speed-1.0 agent.
    """
    if not eligible:
        return "no_agents" if not any(a.registered for a in agents) else "no_eligible"
    free = [n for n in eligible if agents[n].has_room(now)]
    if not free:
        return "all_busy"
    if reference != ORACLE:
        return free[rng.randrange(len(free))]
    best: list[int] = []
    best_key = (True, math.inf)
    for n in free:
        state = agents[n]
        start = max(now, state.free_at[0])
        service, fails = state.service(base_ms, start)
        # A failing agent never finishes the request: prefer any that will, however late.
        key = (fails, start + service)
        if key < best_key:
            best, best_key = [n], key
        elif key == best_key:
            best.append(n)
    # Equal finishes (identical idle agents) are drawn at random, so the oracle does
    # not pile work on the first agent listed.
    return best[0] if len(best) == 1 else best[rng.randrange(len(best))]

"""The reference policies, which pick without the balancer: ``random``, ``oracle``, ``informed``.

``random`` draws uniformly among the eligible agents with room, the floor any strategy
should beat. ``oracle`` knows every agent's queue, the request's service time on each and
which agents are failing and which must load the request's model first (the load
time), and picks the one that will finish the request first: greedy
(the earliest finish for this request, not the best schedule for all of them) and blind
to sticky sessions, so a practical "best possible", not a proven optimum.

``informed`` knows everything a balancer could learn perfectly, but not request sizes:
each agent's speed, slots, faults, requests in system and loaded models, and each model's
mean size.
It ranks as the load-ranked strategies do (``strategies.base.expected_time_rank``),
with true figures where they have estimates: the request's expected service time, its
model's mean size over the agent's speed, plus, with every slot busy, the wait for one,
``(in system + 1 - slots) / slots`` times the agent's mean service time
(``AgentState.mean_ms`` over its speed). Blind to sticky sessions too. The gap between
it and the oracle is what not knowing sizes costs any balancer; the gap between a
policy and it is what that policy's estimates (and sessions) cost.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from lb_service.simulate.engine.agents import AgentState
from lb_service.simulate.policies import INFORMED, ORACLE


def reference_pick(
    reference: str | None,
    rng: random.Random,
    agents: Sequence[AgentState],
    eligible: Sequence[int],
    base_ms: float,
    now: float,
    expected_ms: float,
    model: str = "",
) -> int | str:
    """The index of the agent ``reference`` picks, or the reason it refuses (as counted).

    ``eligible`` are the indices of the registered agents that meet the request's task;
    ``base_ms`` is the request's service time on a speed-1.0 agent, which only the oracle
    reads; ``expected_ms`` its model's mean, which the informed reference reads instead.
    Both know whether ``model`` must be loaded first (``AgentState.load_wait``).
    """
    if not eligible:
        return "no_agents" if not any(a.registered for a in agents) else "no_eligible"
    free = [n for n in eligible if agents[n].has_room(now)]
    if not free:
        return "all_busy"
    rank: Callable[[AgentState, float, float, float, str], tuple[bool, float]]
    if reference == ORACLE:
        rank = _finish
    elif reference == INFORMED:
        rank = _expected
    else:
        return free[rng.randrange(len(free))]
    best: list[int] = []
    best_key = (True, math.inf)
    for n in free:
        state = agents[n]
        key = rank(state, base_ms, expected_ms, now, model)
        if key < best_key:
            best, best_key = [n], key
        elif key == best_key:
            best.append(n)
    # Equal finishes (identical idle agents) are drawn at random, so neither reference
    # piles work on the first agent listed.
    return best[0] if len(best) == 1 else best[rng.randrange(len(best))]


def _finish(
    state: AgentState, base_ms: float, _: float, now: float, model: str
) -> tuple[bool, float]:
    """The oracle's key: whether the request fails there, and when it would finish."""
    start = max(now, state.free_at[0])
    service, fails = state.service(base_ms, start)
    # A failing agent never finishes the request: prefer any that will, however late.
    return fails, start + state.load_wait(model) + service


def _expected(
    state: AgentState, _: float, expected_ms: float, now: float, model: str
) -> tuple[bool, float]:
    """The informed key: whether the request fails there, and its expected time (above)."""
    slots = state.sim.slots
    waiting = max(0, state.in_system(now) + 1 - slots)
    # Faults as the oracle sees them, read as a time per ms of size.
    per_ms, fails = state.service(1.0, now)
    return fails, (expected_ms + waiting * state.mean_ms / slots) * per_ms + state.load_wait(model)

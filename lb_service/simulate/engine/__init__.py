"""The simulation engine: replays a request stream on a virtual clock against one policy.

A balancer policy drives the real ``LoadBalancer`` over a ``MemoryStore``, making exactly
the calls the servicer makes: ``register``, ``select`` (with ``acquire`` for a dispatcher
whose reports are immediate), ``start`` and ``end`` (delivered ``report_delay_ms`` late
for the others) and a periodic ``sweep``. Its clock is the virtual one and its random
source is seeded, so a run is a pure function of the scenario, the seed and the policy.
``LoadBalancer`` methods are coroutines that never suspend over a memory store, so the
whole run is one coroutine on one event loop and costs only the balancer's own work.
A reference policy (random, oracle, informed) picks by itself instead, with no balancer
at all.

Where each part lives:

- ``loop``: the event loop, ``run_policy`` and ``run_all``, and the virtual clock.
- ``agents``: an agent's slots and FIFO queue, and the faults it replays (slow, fail,
  a crash's effect on the requests it holds).
- ``references``: the random, oracle and informed policies' picks.
- ``ejections``: what the balancer did to failing agents, counted and watched.
- ``results``: ``PolicyRun`` and ``EjectionWatch``, what a run records.

Callers import from this package, not from its modules; the names below are its surface.
"""

from __future__ import annotations

from lb_service.simulate.engine.loop import (
    START_MS,
    Progress,
    VirtualClock,
    run_all,
    run_policy,
)
from lb_service.simulate.engine.results import EjectionWatch, PolicyRun

__all__ = [
    "START_MS",
    "EjectionWatch",
    "PolicyRun",
    "Progress",
    "VirtualClock",
    "run_all",
    "run_policy",
]

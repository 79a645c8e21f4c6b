"""Discrete-event simulation of the balancer on a virtual clock (``lb-service simulate``).

Where each part lives, in the order a run uses them:

- ``scenario/``: the scenario file, one module per section, read into a ``Scenario``
  (``document`` is the field-by-field YAML reader it shares with the emulator).
- ``policies``: the policies a run compares (balancer strategies with options, and the
  random, oracle and informed references).
- ``workload``: capacity, the arrival rate and the request stream itself.
- ``engine/``: the event loop on the virtual clock (``loop``), the agents' slots, queues
  and faults (``agents``), the reference policies' picks (``references``) and the
  balancer's ejections (``ejections``), recorded as a ``PolicyRun``.
- ``metrics``: what each run measured; ``targets``: the scenario's targets judged on it.
- ``report`` (table, JSON, progress) and ``plots`` (PNG); ``command``: the subcommand.

The names below are the surface a program needs to run a simulation without the command
line; each is also importable from the module that defines it.
"""

from __future__ import annotations

from lb_service.simulate.engine import PolicyRun, run_all, run_policy
from lb_service.simulate.metrics import PolicyResult, summarise
from lb_service.simulate.policies import DEFAULT_POLICIES, PolicySpec
from lb_service.simulate.scenario import Scenario, ScenarioError, load, parse
from lb_service.simulate.targets import TargetResult, judge
from lb_service.simulate.workload import Requests, generate

__all__ = [
    "DEFAULT_POLICIES",
    "PolicyResult",
    "PolicyRun",
    "PolicySpec",
    "Requests",
    "Scenario",
    "ScenarioError",
    "TargetResult",
    "generate",
    "judge",
    "load",
    "parse",
    "run_all",
    "run_policy",
    "summarise",
]

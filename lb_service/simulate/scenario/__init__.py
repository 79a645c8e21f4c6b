"""Scenario files: a cluster, a workload, faults, the policies to compare and the targets.

A scenario is one YAML document (see ``scenarios/*.yaml`` for commented examples)::

    name, description, seed, duration_s, warmup_s, sweep_interval_s, sample_interval_s
    models:    {MODEL: {service_ms: {median, p99} | {mean, sigma}}}
    cluster:   [agent, ...] or "path/to/cluster.yaml" (a file holding that list)
    workload:  {utilisation | rate_per_s, mix, sessions, bursts, dispatchers, bypass}
    faults:    [{agent, at_s, kind: slow | fail | join, factor, fail_ms, in_flight, until_s}]
    balancer:  {BalancerConfig option: value}  (every balancer policy but ``default``)
    policies:  [NAME | {name, strategy | reference, options}]  (default: all built-in)
    targets:   [{kind, ...}]
    reports:   {interval_ms, delay_ms}  (agents report their queue; default: no reports)

Every field is checked here, once; a mistake raises ``ScenarioError`` whose message starts
with the field's path (``workload.mix[1].share: ...``), so the command can print one line
a user can act on. Unknown keys are mistakes too: a typo must not silently fall back to a
default and simulate something other than what the user wrote.

Where each part lives (one section a module):

- ``types``: the validated values, ``Scenario`` and everything it holds.
- ``read``: ``load`` and ``parse`` (the top-level keys, then each section in order) and
  ``with_utilisation`` (``--utilisation``).
- ``cluster``: ``models`` and ``cluster``: service times, agents decoded from entries
  (shared with the emulator).
- ``workload``: ``workload``.
- ``faults``: ``faults``.
- ``policies``: ``balancer`` (BalancerConfig options) and ``policies``.
- ``targets``: ``targets``, and the check that each can be judged.

Callers import from this package, not from its modules; the names below are its surface.
"""

from __future__ import annotations

# ScenarioError is re-exported: every caller reads scenarios through this package.
from lb_service.simulate.document import ScenarioError
from lb_service.simulate.scenario.cluster import (
    CLUSTER_KEYS,
    MAX_AGENTS,
    cluster_entries,
    cluster_entry,
    default_speed,
    service_times,
)
from lb_service.simulate.scenario.read import MAX_UTILISATION, load, parse, with_utilisation
from lb_service.simulate.scenario.types import (
    FAULT_KINDS,
    TARGET_KINDS,
    Burst,
    Bypass,
    Dispatcher,
    Fault,
    Reports,
    RequestType,
    Scenario,
    ServiceTime,
    SimAgent,
    TargetSpec,
    Workload,
)
from lb_service.simulate.scenario.workload import MAX_MIX

__all__ = [
    "CLUSTER_KEYS",
    "FAULT_KINDS",
    "MAX_AGENTS",
    "MAX_MIX",
    "MAX_UTILISATION",
    "TARGET_KINDS",
    "Burst",
    "Bypass",
    "Dispatcher",
    "Fault",
    "Reports",
    "RequestType",
    "Scenario",
    "ScenarioError",
    "ServiceTime",
    "SimAgent",
    "TargetSpec",
    "Workload",
    "cluster_entries",
    "cluster_entry",
    "default_speed",
    "load",
    "parse",
    "service_times",
    "with_utilisation",
]

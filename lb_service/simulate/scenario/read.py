"""Reading a scenario file: the top-level keys, each section in turn, and overrides.

``load`` reads a file and ``parse`` a document already loaded; both return a validated
``Scenario`` or raise ``ScenarioError``. Each section has its own reader beside this
module; ``with_utilisation`` applies the command line's ``--utilisation``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lb_service.simulate.document import Node, ScenarioError, read_yaml
from lb_service.simulate.policies import DEFAULT_POLICIES
from lb_service.simulate.scenario.cluster import read_cluster, service_times
from lb_service.simulate.scenario.faults import read_faults
from lb_service.simulate.scenario.policies import read_options, read_policies
from lb_service.simulate.scenario.targets import check_targets, read_target
from lb_service.simulate.scenario.types import Reports, Scenario
from lb_service.simulate.scenario.workload import read_workload


def load(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    document = read_yaml(path, "")
    return parse(document, path.parent)


def parse(document: Any, base_dir: Path = Path()) -> Scenario:
    """Validate a document as YAML loads it; a ``cluster`` file path resolves from ``base_dir``."""
    top = Node(document, "")
    top.only(
        "name",
        "description",
        "seed",
        "duration_s",
        "warmup_s",
        "sweep_interval_s",
        "sample_interval_s",
        "models",
        "cluster",
        "workload",
        "faults",
        "balancer",
        "policies",
        "targets",
        "reports",
    )
    duration = top.number("duration_s", 60.0, low=0, low_open=True)
    warmup = top.number("warmup_s", 0.0, low=0)
    if warmup >= duration:
        raise ScenarioError(
            "warmup_s", f"must be less than duration_s ({duration:g}), got {warmup:g}"
        )
    # The sections are read in this order, each from what the ones before produced (a
    # workload needs the cluster, faults its ids, targets the policies and faults); the
    # first mistake found is the one reported.
    service = service_times(top.child("models", required=True))
    agents = read_cluster(top.child("cluster", required=True), service, base_dir)
    workload = read_workload(top.child("workload", required=True), agents)
    faults = read_faults(top.child("faults", default=[]), {a.agent.id for a in agents})
    balancer = read_options(top.child("balancer", default={}))
    policies_node = top.child("policies", default=None)
    policies = None if policies_node.value is None else read_policies(policies_node)
    targets = tuple(read_target(node) for node in top.child("targets", default=[]).items())
    check_targets(targets, policies if policies is not None else DEFAULT_POLICIES, faults, workload)
    return Scenario(
        name=top.string("name", "scenario"),
        description=top.string("description", ""),
        seed=top.integer("seed", 1, low=0),
        duration_s=duration,
        warmup_s=warmup,
        sweep_interval_s=top.number("sweep_interval_s", 1.0, low=0, low_open=True),
        sample_interval_s=(
            top.number("sample_interval_s", None, low=0, low_open=True)
            if top.has("sample_interval_s")
            else None
        ),
        service=service,
        agents=agents,
        workload=workload,
        faults=faults,
        balancer=balancer,
        policies=policies,
        targets=targets,
        reports=_reports(top.child("reports", default=None)),
    )


def _reports(node: Node) -> Reports | None:
    """``reports: {interval_ms, delay_ms}``: agents report their load that often, that late."""
    if node.value is None:
        return None
    node.only("interval_ms", "delay_ms")
    return Reports(
        interval_ms=node.number("interval_ms", None, low=10),
        delay_ms=node.number("delay_ms", 0.0, low=0),
    )


# --- command-line overrides ----------------------------------------------------------


#: The highest utilisation ``--utilisation`` may ask for, as for ``workload.utilisation``.
MAX_UTILISATION = 2.0


def with_utilisation(scenario: Scenario, utilisation: float) -> Scenario:
    """The scenario with ``workload.utilisation`` replaced (``--utilisation``).

    A scenario that gives ``rate_per_s`` instead has no utilisation to replace: that is
    a ScenarioError naming ``workload.rate_per_s``, not a silent switch of meaning.
    """
    if scenario.workload.utilisation is None:
        raise ScenarioError(
            "workload.rate_per_s",
            "--utilisation replaces workload.utilisation, but this scenario gives rate_per_s",
        )
    if not 0 < utilisation <= MAX_UTILISATION:
        raise ScenarioError(
            "workload.utilisation",
            f"must be > 0 and <= {MAX_UTILISATION:g}, got {utilisation!r}",
        )
    workload = dataclasses.replace(scenario.workload, utilisation=utilisation)
    return dataclasses.replace(scenario, workload=workload)

"""The simulator's packages pin their public names in ``__all__``, and each one resolves."""

from __future__ import annotations

import importlib

import pytest

from lb_service.simulate import engine, scenario

#: The packages whose modules callers do not import directly.
PACKAGES = ("lb_service.simulate", "lb_service.simulate.scenario", "lb_service.simulate.engine")


@pytest.mark.parametrize("name", PACKAGES)
def test_every_name_in_all_resolves(name: str) -> None:
    """Each name a package lists in ``__all__`` is an attribute of it, listed once."""
    package = importlib.import_module(name)
    names = package.__all__
    assert names
    assert len(set(names)) == len(names)
    assert [n for n in names if not hasattr(package, n)] == []


def test_scenario_and_engine_keep_the_names_callers_import() -> None:
    """What the emulator, the command, the metrics and the tests import is still there."""
    assert {
        "CLUSTER_KEYS",
        "FAULT_KINDS",
        "MAX_AGENTS",
        "MAX_MIX",
        "MAX_UTILISATION",
        "TARGET_KINDS",
        "Fault",
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
    } <= set(scenario.__all__)
    assert {"EjectionWatch", "PolicyRun", "run_all", "run_policy"} <= set(engine.__all__)

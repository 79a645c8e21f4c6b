"""Scenario files: defaults, validation that names the field, capacity and the shipped files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from lb_service.model import Compute, Hardware, StrategyName
from lb_service.simulate.scenario import (
    ScenarioError,
    TargetSpec,
    default_speed,
    load,
    parse,
    with_utilisation,
)
from lb_service.simulate.workload import arrival_rate_per_s, capacity_per_s, mean_size_ms
from tests.simulate.builders import document, scenario

SCENARIOS = Path(__file__).parents[2] / "scenarios"


def test_minimal_document_takes_the_documented_defaults() -> None:
    """`count` names agents <id>-1..N; shares are normalised; one dispatcher reports at once."""
    sim = scenario(
        cluster=[
            {"id": "g", "count": 2, "models": ["m"], "hardware": {"vram_gb": 80}},
            {"id": "c", "models": ["m"], "hardware": {"cpu_cores": 16}},
        ],
        workload={"utilisation": 0.5, "mix": [{"model": "m", "share": 3}]},
    )
    assert [a.agent.id for a in sim.agents] == ["g-1", "g-2", "c"]
    assert [a.slots for a in sim.agents] == [4, 4, 1]
    assert [a.agent.parallel_slots for a in sim.agents] == [0, 0, 0]  # not declared
    assert sim.agents[0].speed == 1.0
    assert sim.agents[2].speed == pytest.approx(16 / 400)
    assert sim.workload.mix[0].share == 1.0
    assert [(d.share, d.report_delay_ms) for d in sim.workload.dispatchers] == [(1.0, 0.0)]
    assert sim.sample_interval_s is None
    assert [p.name for p in sim.policies or ()] == ["round-robin", "oracle"]


def test_default_speed_grows_with_the_card() -> None:
    """Without an explicit speed, an 80 GB GPU is the reference and smaller hardware is slower."""
    assert default_speed(Hardware(vram_gb=80)) == 1.0
    assert default_speed(Hardware(vram_gb=24)) < 1.0
    assert default_speed(Hardware(cpu_cores=32)) < default_speed(Hardware(vram_gb=8))


def _set(path: str, value: Any) -> dict[str, Any]:
    """A valid document with the value at a dotted path (list indices as numbers) replaced."""
    doc = document()
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (_set("duration_s", -1), "duration_s"),
        (_set("duration_s", "long"), "duration_s"),
        (_set("warmup_s", 20), "warmup_s"),
        (_set("models.m.service_ms", {"median": 100}), "models.m.service_ms.p99"),
        (_set("models.m.service_ms", {"median": 100, "p99": 50}), "models.m.service_ms.p99"),
        (_set("cluster.0.models", ["nope"]), "cluster[0].models[0]"),
        (_set("cluster.0.slots", 0), "cluster[0].slots"),
        (_set("cluster.0.parallel_slots", -1), "cluster[0].parallel_slots"),
        (_set("cluster.0.parallel_slots", 1025), "cluster[0].parallel_slots"),
        (_set("cluster.0.parallel_slots", 2.5), "cluster[0].parallel_slots"),
        (_set("cluster.0.speed", 0), "cluster[0].speed"),
        (_set("cluster.0.gpus", 1), "cluster[0].gpus"),
        (_set("workload.utilization", 0.5), "workload.utilization"),
        (_set("workload.mix", []), "workload.mix"),
        (_set("workload.mix", [{"model": "m", "share": -1}]), "workload.mix[0].share"),
        (
            _set("workload.mix", [{"model": "m", "share": 1, "compute": "tpu"}]),
            "workload.mix[0].compute",
        ),
        (
            _set("workload.dispatchers", [{"report_delay_ms": -5}]),
            "workload.dispatchers[0].report_delay_ms",
        ),
        (_set("workload.sessions", {"share": 1.5}), "workload.sessions.share"),
        (
            _set("faults", [{"agent": "zz", "kind": "slow", "at_s": 1, "factor": 2}]),
            "faults[0].agent",
        ),
        (_set("faults", [{"agent": "a-1", "kind": "melt", "at_s": 1}]), "faults[0].kind"),
        (_set("faults", [{"agent": "a-1", "kind": "slow", "at_s": 1}]), "faults[0].factor"),
        (
            _set("faults", [{"agent": "a-1", "kind": "fail", "at_s": t} for t in (1, 2)]),
            "faults[1].agent",
        ),
        (_set("balancer", {"choice_cout": 2}), "balancer.choice_cout"),
        (_set("balancer", {"peak_ewma": "yes"}), "balancer.peak_ewma"),
        (_set("balancer", {"max_leases": 5}), "balancer.max_leases"),
        (_set("policies", ["round-robbin"]), "policies[0]"),
        (_set("policies", [{"name": "x", "strategy": "fastest"}]), "policies[0].strategy"),
        (
            _set(
                "targets",
                [{"kind": "p99-ratio", "policy": "oracle", "baseline": "nope", "threshold": 1}],
            ),
            "targets[0].baseline",
        ),
        (_set("targets", [{"kind": "ejection", "policy": "round-robin"}]), "targets[0].kind"),
        (
            _set("targets", [{"kind": "p99-vs-oracle", "threshold": 1, "policy": "nope"}]),
            "targets[0].policy",
        ),
        (
            _set("targets", [{"kind": "p99-vs-oracle", "threshold": 1, "baseline": "x"}]),
            "targets[0].baseline",
        ),
        (_set("targets", [{"kind": "affinity", "threshold": 0.9}]), "targets[0].policy"),
        (
            _set(
                "workload",
                {
                    "rate_per_s": 1,
                    "mix": [{"model": "m", "share": 1}],
                    "sessions": {"share": 0.5, "pool": 4},
                },
            )
            | {"targets": [{"kind": "affinity", "policy": "oracle", "threshold": 1.5}]},
            "targets[0].threshold",
        ),
        (
            _set("targets", [{"kind": "affinity", "policy": "oracle", "threshold": 0.9}]),
            "targets[0].kind",
        ),
        (_set("models", None), "models"),
    ],
)
def test_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    """Every invalid value is reported with the path of the field it is in, first."""
    with pytest.raises(ScenarioError) as caught:
        parse(doc)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_a_typo_suggests_the_field_meant() -> None:
    """An unknown key is refused (not ignored) and the nearest known one is suggested."""
    with pytest.raises(ScenarioError, match="did you mean 'utilisation'"):
        parse(_set("workload.utilization", 0.5))


def test_utilisation_needs_every_request_type_to_have_an_agent() -> None:
    """A utilisation cannot be reached when a request type has no agent; a rate can be given."""
    mix = [{"model": "m", "share": 1}, {"model": "m", "share": 1, "compute": "gpu"}]
    with pytest.raises(ScenarioError) as caught:
        parse(_set("workload", {"utilisation": 0.5, "mix": mix}))
    assert caught.value.field == "workload.mix[1]"
    sim = parse(_set("workload", {"rate_per_s": 3, "mix": mix}))
    assert sim.workload.mix[1].task.compute is Compute.GPU


def test_cluster_may_be_a_file_of_its_own(tmp_path: Path) -> None:
    """`cluster: FILE` reads the agent list from a path relative to the scenario file."""
    (tmp_path / "fleet.yaml").write_text("- {id: x, models: [m], speed: 0.5, slots: 2}\n")
    path = tmp_path / "s.yaml"
    path.write_text(
        "models: {m: {service_ms: {mean: 100, sigma: 0.5}}}\n"
        "cluster: fleet.yaml\n"
        "workload: {rate_per_s: 1, mix: [{model: m, share: 1}]}\n"
    )
    sim = load(path)
    assert [(a.agent.id, a.speed, a.slots) for a in sim.agents] == [("x", 0.5, 2)]
    assert sim.service["m"].mean_ms == pytest.approx(100)


def test_policies_with_options_are_checked_and_kept() -> None:
    """A scenario may define its own policy: a strategy plus BalancerConfig options."""
    sim = scenario(
        policies=[{"name": "lc3", "strategy": "least-connections", "options": {"choice_count": 3}}]
    )
    (spec,) = sim.policies or ()
    assert spec.strategy is StrategyName.LEAST_CONNECTIONS
    assert spec.config({"sticky_sessions": False}).choice_count == 3
    assert spec.config({"sticky_sessions": False}).sticky_sessions is False


def test_capacity_is_set_by_the_tightest_group_of_request_types() -> None:
    """Capacity is the least supply/demand over every set of request types (Hall's condition).

    One-slot, speed-1 agents: "big" takes models b and s, "small" only s; each request
    needs 1000 ms of work on average and 3/4 of them are b. The sets give {b}: 1 slot /
    750 ms = 1.33/s, {s}: 2 / 250 ms = 8/s, {b, s}: 2 / 1000 ms = 2/s; the least is 1.33/s.
    """
    sim = scenario(
        models={
            "b": {"service_ms": {"mean": 1000, "sigma": 0.5}},
            "s": {"service_ms": {"mean": 1000, "sigma": 0.5}},
        },
        cluster=[
            {"id": "big", "models": ["b", "s"], "speed": 1, "slots": 1},
            {"id": "small", "models": ["s"], "speed": 1, "slots": 1},
        ],
        workload={
            "utilisation": 0.5,
            "mix": [{"model": "b", "share": 3}, {"model": "s", "share": 1}],
        },
    )
    assert capacity_per_s(sim) == pytest.approx(1 / 0.75)
    rate, capacity = arrival_rate_per_s(sim)
    assert rate == pytest.approx(0.5 * capacity)


def test_an_agents_mean_size_weighs_only_the_kinds_it_can_serve_by_share() -> None:
    """Mix 3:1 of 900 and 100 ms means: 700 ms where both are served, 100 where only s is."""
    sim = scenario(
        models={
            "b": {"service_ms": {"mean": 900, "sigma": 0.5}},
            "s": {"service_ms": {"mean": 100, "sigma": 0.5}},
            "x": {"service_ms": {"mean": 100, "sigma": 0.5}},
        },
        cluster=[
            {"id": "big", "models": ["b", "s"], "speed": 1, "slots": 1},
            {"id": "small", "models": ["s"], "speed": 1, "slots": 1},
            {"id": "other", "models": ["x"], "speed": 1, "slots": 1},
        ],
        workload={"rate_per_s": 1, "mix": [{"model": "b", "share": 3}, {"model": "s", "share": 1}]},
    )
    means = [mean_size_ms(sim, a.agent) for a in sim.agents]
    assert means == [pytest.approx(700), pytest.approx(100), 0.0]


def test_declared_parallel_slots_are_registered_apart_from_the_true_slots() -> None:
    """`parallel_slots` is what the balancer is told; `slots` alone sets what the agent serves."""
    told = {"id": "a", "models": ["m"], "speed": 0.5, "slots": 4, "parallel_slots": 2}
    declared = scenario(cluster=[told])
    undeclared = scenario(cluster=[{k: v for k, v in told.items() if k != "parallel_slots"}])
    assert [(a.slots, a.agent.parallel_slots) for a in declared.agents] == [(4, 2)]
    assert [(a.slots, a.agent.parallel_slots) for a in undeclared.agents] == [(4, 0)]
    assert capacity_per_s(declared) == capacity_per_s(undeclared)


def test_capacity_counts_slots_and_speed() -> None:
    """An agent with 4 slots at half speed does 2 reference requests' work at once."""
    sim = scenario(
        models={"m": {"service_ms": {"mean": 500, "sigma": 0.3}}},
        cluster=[{"id": "a", "models": ["m"], "speed": 0.5, "slots": 4}],
        workload={"rate_per_s": 1, "mix": [{"model": "m", "share": 1}]},
    )
    assert capacity_per_s(sim) == pytest.approx(2 / 0.5)


@pytest.mark.parametrize("name", ["equal", "heterogeneous", "degrading", "stale-reports"])
def test_shipped_scenarios_are_valid_and_declare_targets(name: str) -> None:
    """Every shipped scenario loads, and each one judges at least one target."""
    sim = load(SCENARIOS / f"{name}.yaml")
    assert sim.name == name
    assert sim.targets
    assert math.isfinite(capacity_per_s(sim))


def test_heterogeneous_scenario_spans_cpu_only_to_80_gb() -> None:
    """The heterogeneous scenario runs at 85% and has CPU-only hosts and 80 GB GPUs."""
    sim = load(SCENARIOS / "heterogeneous.yaml")
    vram = {a.agent.hardware.vram_gb for a in sim.agents}
    assert min(vram) == 0
    assert max(vram) == 80
    assert sim.workload.utilisation == 0.85
    assert len(sim.service) >= 3


def test_stale_reports_scenario_has_four_late_dispatchers() -> None:
    """The stale-reports scenario has four dispatchers whose reports arrive 200 ms late."""
    sim = load(SCENARIOS / "stale-reports.yaml")
    assert [d.report_delay_ms for d in sim.workload.dispatchers] == [200.0] * 4


def test_new_target_kinds_are_parsed() -> None:
    """p99-vs-oracle may name a policy (none: the best); affinity takes policy and threshold."""
    sim = scenario(
        workload={
            "rate_per_s": 1,
            "mix": [{"model": "m", "share": 1}],
            "sessions": {"share": 0.5, "pool": 4},
        },
        targets=[
            {"kind": "p99-vs-oracle", "threshold": 1.3},
            {"kind": "p99-vs-oracle", "threshold": 2, "policy": "round-robin"},
            {"kind": "affinity", "policy": "round-robin", "threshold": 0.95},
        ],
    )
    assert sim.targets == (
        TargetSpec("p99-vs-oracle", 1.3),
        TargetSpec("p99-vs-oracle", 2.0, policy="round-robin"),
        TargetSpec("affinity", 0.95, policy="round-robin"),
    )


def test_utilisation_override_replaces_only_a_utilisation() -> None:
    """--utilisation replaces workload.utilisation; a rate_per_s scenario names that field."""
    sim = scenario(workload={"utilisation": 0.8, "mix": [{"model": "m", "share": 1}]})
    changed = with_utilisation(sim, 0.6)
    assert changed.workload.utilisation == 0.6
    assert changed.workload.mix == sim.workload.mix
    assert sim.workload.utilisation == 0.8
    with pytest.raises(ScenarioError) as caught:
        with_utilisation(scenario(), 0.6)
    assert caught.value.field == "workload.rate_per_s"

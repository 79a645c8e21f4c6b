"""Emulator files: the simulator's cluster format plus engine, faults and Ollama's limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lb_service.emulate.spec import Fault, load, parse, parse_fault
from lb_service.model import Engine
from lb_service.simulate.document import ScenarioError

REPO = Path(__file__).resolve().parents[2]
MODELS = {"m": {"service_ms": {"median": 100, "p99": 1000}}}


def _doc(**agent: Any) -> dict[str, Any]:
    return {"models": MODELS, "cluster": [{"id": "a", "models": ["m"], **agent}]}


def test_defaults_are_ollamas() -> None:
    """An agent without the emulator's keys is a healthy Ollama host with Ollama's limits."""
    (agent,) = parse(_doc()).agents
    assert agent.engine is Engine.OLLAMA
    assert agent.fault == Fault("ok")
    assert (agent.port, agent.load_ms, agent.max_queue, agent.max_loaded_models) == (0, 0, 512, 3)


def test_count_expands_with_consecutive_ports() -> None:
    """An entry of count N with a port gives its agents that port and the next ones."""
    spec = parse(_doc(count=3, port=20000, engine="vllm", fault="slow", slow_factor=4))
    assert [(a.id, a.port) for a in spec.agents] == [("a-1", 20000), ("a-2", 20001), ("a-3", 20002)]
    assert {a.engine for a in spec.agents} == {Engine.VLLM}
    assert {a.fault for a in spec.agents} == {Fault("slow", 4.0)}


@pytest.mark.parametrize(
    ("agent", "message"),
    [
        ({"engine": "sglang"}, "cluster[0].engine: must be one of ollama, vllm, got 'sglang'"),
        ({"fault": "asleep"}, "cluster[0].fault: must be one of ok, slow, failing, dead, hung"),
        ({"max_queue": 0}, "cluster[0].max_queue: must be >= 1"),
        ({"colour": "red"}, "cluster[0].colour: unknown field"),
        ({"models": ["x"]}, "cluster[0].models[0]: model 'x' is not defined"),
    ],
)
def test_mistakes_name_their_field(agent: dict[str, Any], message: str) -> None:
    """A bad value is a ScenarioError whose message starts with the field's path."""
    with pytest.raises(ScenarioError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        parse(_doc(**agent))


def test_two_agents_on_one_port_are_refused() -> None:
    """Two entries given the same port are a mistake, found before anything listens."""
    document = _doc(port=20000)
    document["cluster"].append({"id": "b", "models": ["m"], "port": 20000})
    with pytest.raises(ScenarioError, match="same port"):
        parse(document)


def test_a_scenario_file_emulates_as_it_is() -> None:
    """A shipped simulator scenario loads: its cluster is served, its other sections ignored."""
    spec = load(REPO / "scenarios" / "uneven-tiers.yaml")
    assert len(spec.agents) == 12
    assert spec.agents[0].id == "a100-1"


def test_the_example_fleet_loads() -> None:
    """examples/emulated-fleet.yaml is a valid emulator file."""
    spec = load(REPO / "examples" / "emulated-fleet.yaml")
    assert [a.engine for a in spec.agents].count(Engine.VLLM) == 1


def test_admin_faults_are_checked_like_the_files() -> None:
    """The admin endpoint's body is validated by the same reader: kind and factor."""
    assert parse_fault({"fault": "slow", "factor": 3}) == Fault("slow", 3.0)
    with pytest.raises(ScenarioError, match="factor: must be > 0"):
        parse_fault({"fault": "slow", "factor": 0})

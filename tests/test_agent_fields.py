"""The one reader of agents from files: typed fields, the wire's rules, errors naming the field."""

from __future__ import annotations

import math

import pytest

from lb_service.agent_fields import AGENT_FIELDS, agent_from_fields, agent_to_fields
from lb_service.errors import InvalidArgument
from lb_service.model import Agent, Engine, Hardware


def test_an_agent_read_back_from_its_fields_is_the_same_agent() -> None:
    """agent_to_fields writes every field agent_from_fields reads, and nothing else."""
    agent = Agent(
        id="gpu-1",
        host="10.0.0.21",
        port=11434,
        models=("llama3:8b", "qwen:7b"),
        hardware=Hardware(gpu="RTX 4090", vram_gb=24.5, cpu_cores=16, ram_gb=64.0),
        metadata={"zone": "eu-1"},
        max_connections=8,
        parallel_slots=4,
        engine=Engine.OLLAMA,
        heartbeat_ttl_ms=30_000,
        probe_path="/api/ps",
    )
    fields = agent_to_fields(agent)
    assert tuple(fields) == AGENT_FIELDS
    assert agent_from_fields(fields, "agents[0]") == agent


def test_texts_may_be_numbers_and_absent_fields_take_the_defaults() -> None:
    """YAML's `id: 7` is the id "7"; metadata numbers are texts; amounts may be numeric text."""
    agent = agent_from_fields(
        {"id": 7, "host": "h", "port": 1, "metadata": {"rack": 3}, "hardware": {"vram_gb": "24"}},
        "agents[0]",
    )
    assert agent == Agent(
        id="7", host="h", port=1, metadata={"rack": "3"}, hardware=Hardware(vram_gb=24.0)
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("a", "agents[0]: must be a mapping of an agent's fields"),
        ({"id": "a", "colour": "red"}, "agents[0]: unknown field(s) ['colour']"),
        ({"id": "a", "hardware": {"tpu": 1}}, "agents[0].hardware: unknown field(s) ['tpu']"),
        ({"id": "a", "port": True}, "agents[0].port: must be a whole number >= 0, got True"),
        ({"id": "a", "port": 1.5}, "agents[0].port: must be a whole number >= 0, got 1.5"),
        ({"id": "a", "models": "llama3"}, "agents[0].models: must be a list of texts"),
        ({"id": "a", "models": [["x"]]}, "agents[0].models: must be a list of texts"),
        ({"id": "a", "metadata": {"k": {}}}, "agents[0].metadata: must map texts to texts"),
        ({"id": "a", "hardware": {"ram_gb": "lots"}}, "agents[0].hardware.ram_gb: must be a num"),
        ({"id": "a", "hardware": {"ram_gb": math.inf}}, "agents[0].hardware.ram_gb: must be fin"),
        ({"id": "a", "engine": "tgi"}, "agents[0].engine: must be one of ollama, vllm"),
        ({"id": True}, "agents[0].id: must be a text, got True"),
        ({"id": "a", "port": 1}, "agents[0].host: required"),  # the wire's rules apply too
    ],
)
def test_a_bad_field_is_refused_with_its_path(fields: object, message: str) -> None:
    """Every malformed field raises InvalidArgument whose message starts with its path."""
    with pytest.raises(InvalidArgument) as caught:
        agent_from_fields(fields, "agents[0]")
    assert str(caught.value).startswith(message)


def test_without_the_address_rule_an_agent_may_lack_host_and_port() -> None:
    """A state file of an older release restores agents registered without an address."""
    assert agent_from_fields({"id": "a"}, "agents[0]", address=False) == Agent(id="a")


def test_a_reader_may_allow_fewer_fields() -> None:
    """A file kind that has no health fields names the ones it takes when given another."""
    with pytest.raises(InvalidArgument, match=r"unknown field\(s\) \['engine'\]"):
        agent_from_fields({"id": "a", "engine": "ollama"}, "cluster[0]", fields=("id", "port"))

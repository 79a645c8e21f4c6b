"""``lb-service stats``, ``weights set`` and ``strategy get|set``."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli


@pytest.fixture
def fleet(lb: Cli) -> Cli:
    """Two agents, two picks of the GPU agent, one refused pick, and one 30 ms request."""
    lb("agents", "add", "cpu-1", "--host", "10.0.0.11", "--port", "11434")
    lb(
        "agents",
        "add",
        "gpu-1",
        "--host",
        "10.0.0.21",
        "--port",
        "11434",
        "--vram-gb",
        "24",
        "--model",
        "llama3:70b",
    )
    lb("select", "--model", "llama3:70b")
    lb("select", "--model", "llama3:70b", "--acquire")
    lb("select", "--model", "mixtral")
    return lb


def test_stats_table(fleet: Cli) -> None:
    """`stats` prints the counters, then selections per agent."""
    outcome = fleet("stats")
    assert outcome.code == 0
    assert outcome.out.splitlines() == [
        "strategy           least-connections",
        "selections         2",
        "failed selections  1",
        "requests           1",
        "active             1",
        "avg latency ms     0.0",
        "",
        "AGENT  SELECTIONS",
        "gpu-1  2",
    ]


def test_stats_json(fleet: Cli) -> None:
    """`stats --json` prints every counter under its field name."""
    assert fleet("stats", "--json").json() == {
        "strategy": "least-connections",
        "total_selections": 2,
        "failed_selections": 1,
        "total_requests": 1,
        "active_connections": 1,
        "avg_latency_ms": 0.0,
        "selections_by_agent": {"gpu-1": 2},
    }


def test_weights_set(fleet: Cli) -> None:
    """`weights set` applies ID=W pairs and prints every agent's effective weight."""
    outcome = fleet("weights", "set", "cpu-1=2.5", "gpu-1=0")
    assert outcome.out.splitlines() == ["AGENT  WEIGHT", "cpu-1  2.5", "gpu-1  0"]
    assert fleet("weights", "set", "cpu-1=3", "--json").json() == {"cpu-1": 3.0, "gpu-1": 0.0}


def test_weights_get(fleet: Cli) -> None:
    """`weights get` prints every agent's effective weight, defaults and overrides alike."""
    assert fleet("weights", "get").out.splitlines() == ["AGENT  WEIGHT", "cpu-1  1", "gpu-1  24"]
    fleet("weights", "set", "cpu-1=2.5")
    assert fleet("weights", "get", "--json").json() == {"cpu-1": 2.5, "gpu-1": 24.0}


def test_weights_errors(fleet: Cli) -> None:
    """A pair without '=' or a number exits 2; an unknown agent exits 5 and changes nothing."""
    assert fleet("weights", "set", "cpu-1").code == 2
    assert fleet("weights", "set", "cpu-1=heavy").code == 2
    outcome = fleet("weights", "set", "cpu-1=9", "ghost=1")
    assert (outcome.code, outcome.err.count("\n")) == (5, 1)
    assert fleet("loads", "cpu-1", "--json").json()[0]["weight"] == 1.0


def test_strategy_set_and_get(fleet: Cli) -> None:
    """`strategy set` takes the user's spelling and reports the previous one; get reads it."""
    outcome = fleet("strategy", "set", "capability-match")
    assert outcome.out == "strategy capability-match (was least-connections)\n"
    assert fleet("strategy", "get").out == "capability-match\n"
    assert fleet("strategy", "set", "round-robin", "--json").json() == {
        "strategy": "round-robin",
        "previous": "capability-match",
    }
    assert fleet("strategy", "get", "--json").json() == {"strategy": "round-robin"}


def test_unknown_strategy_is_a_usage_error(fleet: Cli) -> None:
    """A strategy name that does not exist exits 2, listing the valid names, and changes nothing."""
    outcome = fleet("strategy", "set", "fastest")
    assert outcome.code == 2
    assert "round-robin" in outcome.err
    assert fleet("strategy", "get").out == "least-connections\n"

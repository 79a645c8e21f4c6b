"""``lb-service agents list|add|remove``: tables, JSON and exit codes."""

from __future__ import annotations

from tests.cli.conftest import ADDRESS, Cli

GPU_ARGS = ("--host", "10.0.0.21", "--port", "11434", "--model", "llama3:8b",
            "--model", "llama3:70b", "--gpu", "RTX 4090", "--vram-gb", "24",
            "--cpu-cores", "16", "--ram-gb", "64", "--max-connections", "4",
            "--parallel-slots", "2", "--meta", "zone=eu-1", "--meta", "rack=r7")  # fmt: skip

GPU_JSON = {
    "id": "gpu-1",
    "host": "10.0.0.21",
    "port": 11434,
    "models": ["llama3:8b", "llama3:70b"],
    "hardware": {"gpu": "RTX 4090", "vram_gb": 24.0, "cpu_cores": 16, "ram_gb": 64.0},
    "metadata": {"zone": "eu-1", "rack": "r7"},
    "max_connections": 4,
    "parallel_slots": 2,
    "engine": "",
    "heartbeat_ttl_ms": 0,
    "probe_path": "",
}


def test_add_then_list_as_a_table(lb: Cli) -> None:
    """`agents add` registers every flag, and `agents list` shows them in aligned columns."""
    added = lb("agents", "add", "gpu-1", *GPU_ARGS)
    assert (added.code, added.out, added.err) == (0, "registered agent gpu-1\n", "")
    assert (
        lb(
            "agents",
            "add",
            "cpu-1",
            "--host",
            "10.0.0.11",
            "--port",
            "11434",
            "--model",
            "llama3:8b",
            "--cpu-cores",
            "32",
        ).code
        == 0
    )
    listed = lb("agents", "list")
    assert listed.code == 0
    assert listed.out.splitlines() == [
        "ID     HOST       PORT   MODELS                GPU       VRAM_GB  CPUS  RAM_GB  MAX_CONN  SLOTS  METADATA",  # noqa: E501
        "gpu-1  10.0.0.21  11434  llama3:8b,llama3:70b  RTX 4090  24       16    64      4         2      rack=r7,zone=eu-1",  # noqa: E501
        "cpu-1  10.0.0.11  11434  llama3:8b             -         0        32    0       -         -      -",  # noqa: E501
    ]


def test_add_and_list_as_json(lb: Cli) -> None:
    """With --json, add prints the agent it registered and list prints every agent."""
    assert lb("agents", "add", "gpu-1", *GPU_ARGS, "--json").json() == GPU_JSON
    assert lb("agents", "list", "--json").json() == [GPU_JSON]


def test_remove(lb: Cli) -> None:
    """`agents remove` deregisters the agent, in words or as JSON."""
    lb("agents", "add", "a", *ADDRESS)
    lb("agents", "add", "b", *ADDRESS)
    assert lb("agents", "remove", "a").out == "removed agent a\n"
    assert lb("agents", "remove", "b", "--json").json() == {"removed": "b"}
    assert lb("agents", "list", "--json").json() == []


def test_removing_an_unknown_agent_exits_not_found(lb: Cli) -> None:
    """An unknown id exits 5 (NOT_FOUND) with one line on stderr and nothing on stdout."""
    outcome = lb("agents", "remove", "ghost")
    assert (outcome.code, outcome.out) == (5, "")
    assert outcome.err == "lb-service: NOT_FOUND: unknown agent 'ghost'\n"


def test_invalid_agent_exits_invalid_argument(lb: Cli) -> None:
    """A value the server refuses (port above 65535) exits 3 (INVALID_ARGUMENT) in one line."""
    outcome = lb("agents", "add", "a", "--host", "h", "--port", "70000")
    assert outcome.code == 3
    assert outcome.err.startswith("lb-service: INVALID_ARGUMENT: ")
    assert outcome.err.count("\n") == 1


def test_malformed_flags_are_usage_errors(lb: Cli) -> None:
    """A --meta without '=' or a negative count exits 2 before any call."""
    assert lb("agents", "add", "a", *ADDRESS, "--meta", "zone").code == 2
    assert lb("agents", "add", "a", *ADDRESS, "--cpu-cores", "-1").code == 2
    assert lb("agents", "list", "--json").json() == []


def test_add_without_an_address_is_a_usage_error(lb: Cli) -> None:
    """`agents add` without --host or --port exits 2 naming the flag, and registers nothing."""
    no_host = lb("agents", "add", "a", "--port", "11434")
    assert no_host.code == 2
    assert "the following arguments are required: --host" in no_host.err
    assert lb("agents", "add", "a", "--host", "h").code == 2
    assert lb("agents", "list", "--json").json() == []


def test_parallel_slots_above_1024_exit_invalid_argument_and_register_nothing(lb: Cli) -> None:
    """The server's slot rule reaches the command line: 1025 exits 3 naming agent.parallel_slots."""
    outcome = lb("agents", "add", "a", *ADDRESS, "--parallel-slots", "1025")
    assert (outcome.code, outcome.out, outcome.err) == (
        3,
        "",
        "lb-service: INVALID_ARGUMENT: agent.parallel_slots: must be from 0 (guess from the "
        "hardware) to 1024, got 1025 (agent 'a')\n",
    )
    assert lb("agents", "list", "--json").json() == []


def test_malformed_parallel_slots_are_usage_errors(lb: Cli) -> None:
    """A negative or non-numeric --parallel-slots exits 2 before any call."""
    for value in ("-1", "four"):
        outcome = lb("agents", "add", "a", *ADDRESS, "--parallel-slots", value)
        assert outcome.code == 2
        assert "--parallel-slots" in outcome.err
    assert lb("agents", "list", "--json").json() == []


def test_port_0_exits_invalid_argument_naming_the_field(lb: Cli) -> None:
    """The server's address rule reaches the command line: port 0 exits 3 naming agent.port."""
    outcome = lb("agents", "add", "a", "--host", "h", "--port", "0")
    assert (outcome.code, outcome.err) == (
        3,
        "lb-service: INVALID_ARGUMENT: agent.port: must be from 1 to 65535, got 0 (agent 'a')\n",
    )

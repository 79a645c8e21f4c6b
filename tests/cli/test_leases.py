"""``lb-service start``, ``end`` and the end command ``select --acquire`` prints."""

from __future__ import annotations

import shlex

import pytest

from tests.cli.conftest import Cli
from tests.client.serving import ThreadServer


@pytest.fixture
def fleet(lb: Cli) -> Cli:
    """One CPU agent and one GPU agent, no lease open."""
    lb("agents", "add", "cpu-1", "--host", "10.0.0.11", "--port", "11434")
    lb("agents", "add", "gpu-1", "--host", "10.0.0.21", "--port", "11434", "--vram-gb", "24")
    return lb


def _active(lb: Cli, agent_id: str) -> int:
    return int(lb("loads", agent_id, "--json").json()[0]["active_connections"])


def _hinted_command(err: str) -> list[str]:
    """The `lb-service end ...` command printed on stderr, as argv (without `lb-service`)."""
    _, _, command = err.partition("end it with: ")
    argv = shlex.split(command.removesuffix(" [--failed]\n"))
    assert argv[:2] == ["lb-service", "end"]
    return argv[1:]


def test_start_prints_the_request_id_alone_and_how_to_end_it(fleet: Cli) -> None:
    """`start` opens a lease, prints only its id on stdout and the end command on stderr."""
    outcome = fleet("start", "gpu-1")
    assert outcome.code == 0
    request_id = outcome.out.strip()
    assert outcome.out == f"{request_id}\n"
    assert _hinted_command(outcome.err) == [
        "end", request_id, "--agent", "gpu-1", "--latency-ms", "MS", "--target", fleet.target,
    ]  # fmt: skip
    assert _active(fleet, "gpu-1") == 1


def test_start_model_opens_the_lease_for_that_model(fleet: Cli, server: ThreadServer) -> None:
    """`start AGENT --model M` names the model: the server's lease keeps it (none without)."""
    with_model = fleet("start", "cpu-1", "--model", "llama3.2:3b chat").out.strip()
    # Another agent: on cpu-1 it would open behind the first, and keep no lesson at all.
    without = fleet("start", "gpu-1").out.strip()
    assert server.balancer is not None
    leases = server.run(server.balancer._store.leases())  # only the store shows a lease's model
    assert (leases[with_model].model, leases[without].model) == ("llama3.2:3b chat", "")


def test_end_closes_the_lease_and_records_the_latency(fleet: Cli) -> None:
    """`end ID --agent A --latency-ms N` closes the lease and folds N into the agent's latency."""
    request_id = fleet("start", "cpu-1").out.strip()
    outcome = fleet("end", request_id, "--agent", "cpu-1", "--latency-ms", "840")
    assert (outcome.code, outcome.out, outcome.err) == (
        0,
        f"ended {request_id} on cpu-1 (done)\n",
        "",
    )
    load = fleet("loads", "cpu-1", "--json").json()[0]
    assert (load["active_connections"], load["avg_latency_ms"], load["failed_requests"]) == (
        0,
        840.0,
        0,
    )


def test_end_failed_counts_a_failure_and_repeating_it_is_harmless(fleet: Cli) -> None:
    """--failed counts the request as failed; ending the same lease again changes nothing."""
    request_id = fleet("start", "cpu-1").out.strip()
    first = fleet("end", request_id, "--agent", "cpu-1", "--latency-ms", "5", "--failed", "--json")
    assert first.json() == {"ended": request_id, "agent_id": "cpu-1", "failed": True}
    again = fleet("end", request_id, "--agent", "cpu-1", "--latency-ms", "5", "--failed")
    assert again.code == 0
    load = fleet("loads", "cpu-1", "--json").json()[0]
    assert (load["active_connections"], load["failed_requests"]) == (0, 1)


def test_select_acquire_prints_the_command_that_ends_its_lease(fleet: Cli) -> None:
    """The end command `select --acquire` prints on stderr, run as printed, ends the lease."""
    outcome = fleet("select", "--gpu", "--acquire", "--json")
    selection = outcome.json()  # stdout stays one JSON document
    assert _active(fleet, "gpu-1") == 1
    argv = _hinted_command(outcome.err)
    assert argv[:4] == ["end", selection["request_id"], "--agent", "gpu-1"]
    argv[argv.index("MS")] = "120"
    assert fleet.raw(*argv).code == 0
    assert _active(fleet, "gpu-1") == 0


def test_select_without_acquire_prints_no_end_command(fleet: Cli) -> None:
    """A plain pick opens no lease, so nothing is printed on stderr."""
    assert fleet("select", "--gpu").err == ""


def test_end_on_the_wrong_agent_exits_invalid_argument(fleet: Cli) -> None:
    """A lease ended with another agent's id exits 3, names the right agent, and stays open."""
    request_id = fleet("start", "gpu-1").out.strip()
    outcome = fleet("end", request_id, "--agent", "cpu-1", "--latency-ms", "1")
    assert (outcome.code, outcome.err) == (
        3,
        f"lb-service: INVALID_ARGUMENT: request_id {request_id!r} was issued for agent "
        "'gpu-1', not 'cpu-1'\n",
    )
    assert _active(fleet, "gpu-1") == 1


def test_unknown_lease_and_unknown_agent_exit_not_found(fleet: Cli) -> None:
    """Ending a lease this server never issued, or starting on an unknown agent, exits 5."""
    assert fleet("end", "nope-1", "--agent", "cpu-1", "--latency-ms", "1").code == 5
    assert fleet("start", "ghost").code == 5


@pytest.mark.parametrize(
    "argv",
    [
        ("end", "r-1", "--latency-ms", "1"),
        ("end", "r-1", "--agent", "cpu-1"),
        ("end", "r-1", "--agent", "cpu-1", "--latency-ms", "-1"),
        ("end", "r-1", "--agent", "cpu-1", "--latency-ms", "nan"),
        ("start",),
    ],
    ids=["no-agent", "no-latency", "negative-latency", "nan-latency", "start-no-agent"],
)
def test_incomplete_end_or_start_is_a_usage_error(fleet: Cli, argv: tuple[str, ...]) -> None:
    """`end` needs --agent and a latency >= 0, `start` an agent: exit 2, the command's usage."""
    outcome = fleet(*argv)
    assert outcome.code == 2
    assert outcome.err.startswith(f"usage: lb-service {argv[0]} ")

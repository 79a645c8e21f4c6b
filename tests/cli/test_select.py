"""``lb-service select``: the pick as a table or JSON, and the codes of refusals."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Cli


@pytest.fixture
def fleet(lb: Cli) -> Cli:
    """A CPU agent and a 24 GB GPU agent serving the 70B model too."""
    lb("agents", "add", "cpu-1", "--host", "10.0.0.11", "--port", "11434", "--model", "llama3:8b")
    lb("agents", "add", "gpu-1", "--host", "10.0.0.21", "--port", "11434", "--model",
       "llama3:8b", "--model", "llama3:70b", "--vram-gb", "24")  # fmt: skip
    return lb


def test_select_prints_the_pick(fleet: Cli) -> None:
    """`select` shows agent, address, strategy, stickiness and lease in one aligned row."""
    outcome = fleet("select", "--model", "llama3:70b", "--gpu")
    assert outcome.code == 0
    assert outcome.out.splitlines() == [
        "AGENT  ADDRESS          STRATEGY           STICKY  REQUEST_ID",
        "gpu-1  10.0.0.21:11434  least-connections  no      -",
    ]


def test_select_json_with_session_and_acquire(fleet: Cli) -> None:
    """--json prints the selection; --session binds, --acquire opens a lease.

    The first request is started and ended in between, as a dispatcher reports it: a
    pick left pending would count on the 1-slot CPU host and spill the second over.
    """
    first = fleet("select", "--cpu", "--session", "s1", "--json").json()
    assert first["agent"]["id"] == "cpu-1"
    request_id = fleet("start", "cpu-1").out.strip()
    fleet("end", request_id, "--agent", "cpu-1", "--latency-ms", "50")
    assert (first["strategy"], first["sticky"], first["request_id"]) == (
        "least-connections",
        False,
        "",
    )
    # The first request runs and ends before the second: pending or open, it would count on
    # the small CPU host, and bounded stickiness would spill the second over to the GPU.
    request_id = fleet("start", "cpu-1").out.strip()
    fleet("end", request_id, "--agent", "cpu-1", "--latency-ms", "10")
    second = fleet("select", "--session", "s1", "--acquire", "--json").json()
    assert (second["agent"]["id"], second["sticky"]) == ("cpu-1", True)
    assert second["request_id"]
    loads = fleet("loads", "cpu-1", "--json").json()
    assert loads[0]["active_connections"] == 1


def test_min_vram_filters(fleet: Cli) -> None:
    """--min-vram excludes agents with less GPU memory."""
    assert fleet("select", "--min-vram", "16", "--json").json()["agent"]["id"] == "gpu-1"


def test_no_eligible_agent_exits_failed_precondition(fleet: Cli) -> None:
    """A model nobody serves exits 9 with the server's message on one stderr line."""
    outcome = fleet("select", "--model", "mixtral")
    assert (outcome.code, outcome.out) == (9, "")
    assert outcome.err == "lb-service: FAILED_PRECONDITION: no agent serves model 'mixtral'\n"
    assert "Traceback" not in outcome.err


def test_gpu_and_cpu_together_are_a_usage_error(fleet: Cli) -> None:
    """--gpu and --cpu exclude each other: exit 2."""
    assert fleet("select", "--gpu", "--cpu").code == 2

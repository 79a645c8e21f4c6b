"""``lb-service loads``: a table or JSON once, or a live view with --watch."""

from __future__ import annotations

import json
import sys
from collections.abc import Generator, Sequence

import pytest

from lb_service.client import LoadBalancerClient
from lb_service.model import AgentLoad, LoadSnapshot
from tests.cli.conftest import Cli


@pytest.fixture
def fleet(lb: Cli) -> Cli:
    """Two agents, one with an open lease and a 24 GB default weight."""
    lb("agents", "add", "cpu-1", "--host", "10.0.0.11", "--port", "11434")
    lb("agents", "add", "gpu-1", "--host", "10.0.0.21", "--port", "11434", "--vram-gb", "24")
    lb("select", "--model", "", "--min-vram", "1", "--acquire")
    return lb


def test_loads_table(fleet: Cli) -> None:
    """`loads` prints one aligned row per agent with active count, slots, latency and weight."""
    lines = fleet("loads").out.splitlines()
    assert lines[0].split() == [
        "AGENT", "ACTIVE", "SLOTS", "AVG_LATENCY_MS", "CAPACITY_RPS", "REQUESTS", "FAILED",
        "WEIGHT", "LAST_REQUEST", "EJECTED_UNTIL", "REPORT", "HEALTH",
    ]  # fmt: skip
    # No request has completed yet: no capacity learned ("-"), the slots guessed.
    assert lines[1].split() == [
        "cpu-1", "0", "1", "0.0", "-", "0", "0", "1", "-", "-", "-", "healthy"
    ]  # fmt: skip
    assert lines[2].split()[:8] == ["gpu-1", "1", "4", "0.0", "-", "1", "0", "24"]
    assert lines[2].split()[-3:] == ["-", "-", "healthy"]  # not ejected, no report, healthy
    assert len(lines) == 3


def test_a_heartbeat_with_a_report_shows_in_loads(fleet: Cli) -> None:
    """`heartbeat --queued --kv-cache --loaded-model` sends a report; `loads` shows it."""
    sent = fleet("heartbeat", "gpu-1", "--queued", "3", "--kv-cache", "0.45",
                 "--loaded-model", "llama3:8b")  # fmt: skip
    assert (sent.code, sent.out) == (0, "gpu-1: alive (load report kept)\n")
    row = next(line for line in fleet("loads").out.splitlines() if line.startswith("gpu-1 "))
    assert "queued 3, kv 45%, loaded llama3:8b, " in row
    (load,) = fleet("loads", "gpu-1", "--json").json()
    assert load["report"]["queued_requests"] == 3
    assert load["report"]["running_requests"] is None


def test_a_heartbeat_with_a_bad_report_is_refused(fleet: Cli) -> None:
    """A KV-cache share over 1 is INVALID_ARGUMENT naming the field; nothing is kept."""
    refused = fleet("heartbeat", "gpu-1", "--kv-cache", "1.5")
    assert refused.code != 0
    assert "report.kv_cache_usage must be a fraction in [0, 1], got 1.5" in refused.err
    assert fleet("loads", "gpu-1", "--json").json()[0]["report"] is None


def test_loads_json_for_named_agents(fleet: Cli) -> None:
    """`loads ID --json` prints those agents' loads, in the order named."""
    loads = fleet("loads", "gpu-1", "cpu-1", "--json").json()
    assert [load["agent_id"] for load in loads] == ["gpu-1", "cpu-1"]
    assert loads[1] == {
        "agent_id": "cpu-1",
        "active_connections": 0,
        "avg_latency_ms": 0.0,
        "last_request_at_ms": 0,
        "total_requests": 0,
        "failed_requests": 0,
        "weight": 1.0,
        "ejected_until_ms": 0,
        "capacity_rps": 0.0,
        "parallel_slots": 1,
        "health": "healthy",
        "health_reason": "",
        "report": None,
        "report_age_ms": 0,
    }


def test_loads_of_an_unknown_agent_exits_not_found(fleet: Cli) -> None:
    """An unknown id exits 5 with one line on stderr."""
    outcome = fleet("loads", "ghost")
    assert (outcome.code, outcome.err) == (5, "lb-service: NOT_FOUND: unknown agent 'ghost'\n")


def test_watch_options_need_watch(fleet: Cli) -> None:
    """--interval-ms or --count without --watch is a usage error, exit 2."""
    outcome = fleet("loads", "--count", "1")
    assert outcome.code == 2
    assert outcome.err.startswith("usage: lb-service loads ")
    assert outcome.err.endswith(
        "lb-service loads: error: --interval-ms and --count only apply with --watch\n"
    )


def test_watch_json_prints_one_line_per_update(fleet: Cli) -> None:
    """`loads --watch --json --count 1` prints the first snapshot as one JSON line, exit 0."""
    outcome = fleet("loads", "cpu-1", "--watch", "--json", "--count", "1", "--interval-ms", "200")
    assert outcome.code == 0
    [line] = outcome.out.splitlines()
    update = json.loads(line)
    assert update["timestamp_ms"] > 0
    assert [load["agent_id"] for load in update["loads"]] == ["cpu-1"]


def test_watch_table_without_a_terminal(fleet: Cli) -> None:
    """Without a terminal each update is printed as a new table under a time heading, no ANSI."""
    out = fleet("loads", "--watch", "--count", "1").out
    assert out.startswith("loads at ")
    assert out.splitlines()[1].startswith("AGENT  ACTIVE")
    assert "\x1b" not in out


def test_watch_table_redraws_in_a_terminal(fleet: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal each update homes the cursor and clears the screen before the table."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    out = fleet("loads", "--watch", "--count", "1").out
    assert out.startswith("\x1b[H\x1b[2Jloads at ")
    assert "(Ctrl-C to stop)" in out


def test_ctrl_c_ends_a_watch_cleanly(fleet: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while watching exits 0 with nothing on stderr, keeping what was printed."""

    def interrupted_watch(
        self: LoadBalancerClient,
        agent_ids: Sequence[str] = (),
        *,
        min_interval_ms: int = 0,
        timeout: float | None = None,
    ) -> Generator[LoadSnapshot, None, None]:
        yield LoadSnapshot((AgentLoad("a", 1, 0.0, 0, 1, 0, 1.0),), 1)
        raise KeyboardInterrupt  # where a real Ctrl-C lands: waiting for the next update

    monkeypatch.setattr(LoadBalancerClient, "watch", interrupted_watch)
    outcome = fleet("loads", "--watch", "--json")
    assert (outcome.code, outcome.err) == (0, "")
    assert json.loads(outcome.out) == {
        "loads": [
            {
                "agent_id": "a",
                "active_connections": 1,
                "avg_latency_ms": 0.0,
                "last_request_at_ms": 0,
                "total_requests": 1,
                "failed_requests": 0,
                "weight": 1.0,
                "ejected_until_ms": 0,
                "capacity_rps": 0.0,
                "parallel_slots": 0,
                "health": "healthy",
                "health_reason": "",
                "report": None,
                "report_age_ms": 0,
            }
        ],
        "timestamp_ms": 1,
    }


def test_ctrl_c_elsewhere_exits_130(fleet: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during any other command exits 130 (the shell's code for SIGINT), no traceback."""

    def interrupted(self: LoadBalancerClient, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(LoadBalancerClient, "statistics", interrupted)
    outcome = fleet("stats")
    assert (outcome.code, outcome.out, outcome.err) == (130, "", "")


def test_watch_count_gives_up_when_updates_do_not_come(fleet: Cli) -> None:
    """`--watch --count 2` on loads that never change exits 4 (DEADLINE_EXCEEDED), saying why."""
    outcome = fleet("loads", "--watch", "--json", "--count", "2", "--timeout", "0.3")
    assert outcome.code == 4
    assert len(outcome.out.splitlines()) == 1  # the snapshot that did come is kept
    assert outcome.err == (
        "lb-service: DEADLINE_EXCEEDED: loads --watch got 1 of 2 updates in 0.3 s; loads only "
        "update when they change: raise --timeout or lower --count\n"
    )


@pytest.mark.parametrize(
    ("argv", "limit"),
    [
        (("--count", "1"), 30.0),
        (("--count", "1", "--timeout", "2.5"), 2.5),
        ((), None),
    ],
    ids=["count-defaults-to-30s", "timeout-given", "no-count-no-limit"],
)
def test_watch_time_limit(
    fleet: Cli, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...], limit: float | None
) -> None:
    """With --count the stream gets --timeout (30 s by default) as its deadline; without, none."""
    seen: list[float | None] = []

    def recording_watch(
        self: LoadBalancerClient,
        agent_ids: Sequence[str] = (),
        *,
        min_interval_ms: int = 0,
        timeout: float | None = None,
    ) -> Generator[LoadSnapshot, None, None]:
        seen.append(timeout)
        yield LoadSnapshot((), 1)
        raise KeyboardInterrupt

    monkeypatch.setattr(LoadBalancerClient, "watch", recording_watch)
    assert fleet("loads", "--watch", "--json", *argv).code == 0
    assert seen == [limit]


def test_watch_timeout_without_count_is_a_usage_error(fleet: Cli) -> None:
    """A watch without --count runs until Ctrl-C, so --timeout there exits 2 and says so."""
    outcome = fleet("loads", "--watch", "--timeout", "5")
    assert outcome.code == 2
    assert outcome.err.endswith(
        "lb-service loads: error: --timeout with --watch needs --count (a watch runs until "
        "Ctrl-C)\n"
    )

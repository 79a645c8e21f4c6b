"""``lb-service drain`` and ``heartbeat``, and the health flags of ``agents add``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lb_service.client import LoadBalancerClient
from lb_service.client_commands import health as commands
from tests.cli.conftest import ADDRESS, Cli


def _nothing() -> None:
    pass


class FakeTime:
    """A clock for ``drain --wait`` that moves only when it sleeps, running a hook each time."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.hook: Callable[[], None] = _nothing

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.hook()


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    """Replace drain --wait's clock and sleep with a FakeTime."""
    fake = FakeTime()
    monkeypatch.setattr(commands, "_clock", fake.clock)
    monkeypatch.setattr(commands, "_sleep", fake.sleep)
    return fake


@pytest.fixture
def busy(lb: Cli) -> tuple[Cli, str]:
    """Agents a and b, and one request open on a; returns the cli and its request id."""
    lb("agents", "add", "a", *ADDRESS)
    lb("agents", "add", "b", *ADDRESS)
    request_id = lb("start", "a", "--json").json()["request_id"]
    return lb, request_id


def test_drain_says_how_many_requests_remain_open(busy: tuple[Cli, str]) -> None:
    """`drain AGENT` answers at once with the agent's open requests; loads then show DRAINING."""
    lb, _ = busy
    outcome = lb("drain", "a")

    assert (outcome.code, outcome.out) == (0, "a: draining, 1 request(s) open\n")
    row = next(line for line in lb("loads").out.splitlines() if line.startswith("a "))
    assert row.endswith("draining (drained by admin)")
    assert {lb("select", "--json").json()["agent"]["id"] for _ in range(3)} == {"b"}


def test_drain_wait_returns_once_the_open_requests_end(
    busy: tuple[Cli, str], fake_time: FakeTime
) -> None:
    """`drain --wait` polls until the agent's active count is 0, then says it is drained."""
    lb, request_id = busy

    def end_the_request() -> None:
        if len(fake_time.sleeps) == 2:  # the dispatcher finishes during the second wait
            with LoadBalancerClient(lb.target) as client:
                client.end(request_id, latency_ms=12.0)

    fake_time.hook = end_the_request
    outcome = lb("drain", "a", "--wait", "--interval", "2")

    assert (outcome.code, outcome.out, outcome.err) == (0, "a: drained\n", "")
    assert fake_time.sleeps == [2.0, 2.0]


def test_drain_wait_times_out_saying_what_remains(
    busy: tuple[Cli, str], fake_time: FakeTime
) -> None:
    """At --timeout with requests still open, `drain --wait` exits 4 naming how many remain."""
    lb, _ = busy
    outcome = lb("drain", "a", "--wait", "--timeout", "5", "--json")

    assert outcome.code == commands.DRAIN_INCOMPLETE == 4
    assert outcome.json() == {"agent": "a", "draining": True, "active_connections": 1}
    assert outcome.err == (
        "lb-service: drain of a incomplete: 1 request(s) still open after 5 s; wait longer "
        "(--timeout) or check the dispatchers\n"
    )
    assert sum(fake_time.sleeps) == pytest.approx(5.0)


def test_drain_undo_takes_the_agent_back(busy: tuple[Cli, str]) -> None:
    """`drain --undo` ends the drain: the agent is healthy and picked again."""
    lb, _ = busy
    lb("drain", "a")

    assert lb("drain", "a", "--undo").out == "a: undrained\n"
    assert lb("loads", "a", "--json").json()[0]["health"] == "healthy"


def test_drain_undo_with_wait_is_a_usage_error(lb: Cli) -> None:
    """--undo --wait is contradictory: usage error, status 2, nothing sent."""
    outcome = lb("drain", "a", "--undo", "--wait")

    assert outcome.code == 2
    assert "does not go with --undo" in outcome.err


def test_drain_of_an_unknown_agent_exits_not_found(lb: Cli) -> None:
    """Draining an id that is not registered exits 5 with the server's message."""
    outcome = lb("drain", "ghost")

    assert (outcome.code, outcome.err) == (
        5,
        "lb-service: NOT_FOUND: unknown agent 'ghost'; only registered agents can be drained\n",
    )


def test_agents_add_with_engine_and_heartbeat_then_heartbeat(lb: Cli) -> None:
    """`agents add --engine --heartbeat-ttl-ms` registers them; `heartbeat` keeps it alive."""
    added = lb("agents", "add", "o", *ADDRESS, "--engine", "ollama", "--heartbeat-ttl-ms", "5000")
    assert added.code == 0

    listed = lb("agents", "list", "--json").json()[0]
    assert (listed["engine"], listed["heartbeat_ttl_ms"]) == ("ollama", 5000)
    assert lb("heartbeat", "o").out == "o: alive\n"
    gone = lb("heartbeat", "ghost")
    assert gone.code == 5
    assert "register it again" in gone.err


def test_agents_add_with_an_unknown_engine_is_a_usage_error(lb: Cli) -> None:
    """An engine name the service does not know is refused before any call, status 2."""
    outcome = lb("agents", "add", "o", *ADDRESS, "--engine", "tgi")

    assert outcome.code == 2
    assert "invalid choice: 'tgi'" in outcome.err

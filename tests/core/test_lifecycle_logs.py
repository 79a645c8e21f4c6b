"""Every change in an agent's life is one log line with its ids, whoever caused it."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from structlog.testing import capture_logs

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.store.memory import MemoryStore
from tests.factories import FakeClock, agent


def _balancer(clock: FakeClock, **options: Any) -> LoadBalancer:
    return LoadBalancer(MemoryStore(), BalancerConfig(**options), clock=clock)


def _named(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


async def test_registering_logs_new_and_changed_agents_but_not_identical_repeats(
    clock: FakeClock,
) -> None:
    """A new agent and a changed one are logged with their ids; re-registering as-is is quiet."""
    lb = _balancer(clock)
    with capture_logs() as logs:
        await lb.register(agent("a", host="10.0.0.1"))
        await lb.register(agent("a", host="10.0.0.1"))
        await lb.register(agent("a", host="10.0.0.2"))
    registered = _named(logs, "agent_registered")
    assert [(e["agent_id"], e["host"], e["new"]) for e in registered] == [
        ("a", "10.0.0.1", True),
        ("a", "10.0.0.2", False),
    ]
    assert registered[0]["port"] == 11434
    assert registered[0]["models"] == ["llama3:8b"]


async def test_deregistering_logs_the_agent(clock: FakeClock) -> None:
    """Removing an agent logs one agent_deregistered line naming it."""
    lb = _balancer(clock)
    await lb.register(agent("a"))
    with capture_logs() as logs:
        await lb.deregister("a")
    assert [(e["event"], e["agent_id"]) for e in logs] == [("agent_deregistered", "a")]


async def test_ejection_and_return_are_logged_with_the_failures(clock: FakeClock) -> None:
    """The ejecting failure logs the failures in a row; the sweep logs the agent coming back."""
    lb = _balancer(clock, ejection_consecutive_failures=3, ejection_base_s=30)
    for name in ("a", "b"):
        await lb.register(agent(name))
    with capture_logs() as logs:
        for _ in range(3):
            await lb.end("a", 100.0, await lb.start("a"), failed=True)
    (ejected,) = _named(logs, "agent_ejected")
    assert ejected["agent_id"] == "a"
    assert ejected["failures"] == 3
    assert ejected["ejected_for_s"] == 30
    assert ejected["log_level"] == "warning"

    with capture_logs() as logs:
        await lb.sweep()  # still ejected: nothing to say
        clock.advance(30)
        await lb.sweep()
    (returned,) = _named(logs, "agent_returned")
    assert returned["agent_id"] == "a"
    assert returned["failed_requests"] == 3
    assert returned["times_ejected"] == 1


async def test_an_expired_lease_is_logged_with_its_agent_and_request_id(clock: FakeClock) -> None:
    """Each lease the sweep expires is one warning naming the agent and the request id."""
    lb = _balancer(clock, request_timeout_s=10)
    await lb.register(agent("a"))
    request_id = await lb.start("a")
    clock.advance(11)
    with capture_logs() as logs:
        await lb.sweep()
    (expired,) = _named(logs, "lease_expired")
    assert (expired["agent_id"], expired["request_id"]) == ("a", request_id)
    assert expired["age_s"] == 11
    assert expired["log_level"] == "warning"

"""Leases: acquire is atomic, ends are idempotent, and forgotten requests expire."""

from __future__ import annotations

import asyncio
import math

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import AgentNotFound, InvalidArgument, LeaseNotFound
from tests.factories import START_MS, FakeClock, agent, balancer


async def _active(lb: LoadBalancer, agent_id: str) -> int:
    [load] = await lb.loads([agent_id])
    return load.active_connections


async def test_concurrent_acquires_take_different_idle_agents(lb: LoadBalancer) -> None:
    """Two dispatchers acquiring at once never both get the same idle agent."""
    await lb.register(agent("a", max_connections=1))
    await lb.register(agent("b", max_connections=1))
    first, second = await asyncio.gather(lb.select(acquire=True), lb.select(acquire=True))
    assert {first.agent.id, second.agent.id} == {"a", "b"}
    assert first.request_id
    assert second.request_id
    assert first.request_id != second.request_id


async def test_start_opens_a_lease(lb: LoadBalancer, clock: FakeClock) -> None:
    """RecordRequestStart returns a request id, counts the request and stamps the time."""
    await lb.register(agent("a"))
    assert await lb.start("a")
    [load] = await lb.loads(["a"])
    assert (load.active_connections, load.total_requests) == (1, 1)
    assert load.last_request_at_ms == START_MS


async def test_start_on_unknown_agent_is_not_found(lb: LoadBalancer) -> None:
    """A start for an agent the service has never seen raises AgentNotFound."""
    with pytest.raises(AgentNotFound):
        await lb.start("ghost")


async def test_end_with_request_id_is_idempotent(lb: LoadBalancer) -> None:
    """A repeated end of one lease decrements once and records its latency once."""
    await lb.register(agent("a"))
    request_id = await lb.start("a")
    await lb.start("a")
    await lb.end("a", 100.0, request_id)
    await lb.end("a", 900.0, request_id)
    [load] = await lb.loads(["a"])
    assert (load.active_connections, load.avg_latency_ms) == (1, 100.0)


async def test_end_without_id_closes_oldest(lb: LoadBalancer) -> None:
    """An end without request_id closes the agent's oldest lease, which can then not be ended."""
    await lb.register(agent("a"))
    oldest = await lb.start("a")
    newest = await lb.start("a")
    await lb.end("a", 10.0)
    await lb.end("a", 10.0, oldest)  # already closed: no effect
    assert await _active(lb, "a") == 1
    await lb.end("a", 10.0, newest)
    assert await _active(lb, "a") == 0


async def test_end_without_open_lease_never_goes_negative(lb: LoadBalancer) -> None:
    """With no lease open, an end records the latency and leaves the count at zero."""
    await lb.register(agent("a"))
    await lb.end("a", 50.0)
    [load] = await lb.loads(["a"])
    assert (load.active_connections, load.avg_latency_ms) == (0, 50.0)


async def test_unknown_request_id_is_not_found(lb: LoadBalancer) -> None:
    """A request id the service never issued raises LeaseNotFound."""
    await lb.register(agent("a"))
    await lb.start("a")
    with pytest.raises(LeaseNotFound):
        await lb.end("a", 1.0, "test-999")
    with pytest.raises(LeaseNotFound):
        await lb.end("a", 1.0, "not-a-lease")


async def test_request_id_for_another_agent_is_invalid(lb: LoadBalancer) -> None:
    """Ending agent b's request with a's lease is rejected and the lease stays open."""
    await lb.register(agent("a"))
    await lb.register(agent("b"))
    request_id = await lb.start("a")
    with pytest.raises(InvalidArgument, match="issued for agent 'a', not 'b'"):
        await lb.end("b", 1.0, request_id)
    assert await _active(lb, "a") == 1


@pytest.mark.parametrize("latency", [-1.0, math.nan, math.inf, -math.inf])
async def test_bad_latency_is_invalid(lb: LoadBalancer, latency: float) -> None:
    """Negative and non-finite latencies are rejected without touching the lease."""
    await lb.register(agent("a"))
    request_id = await lb.start("a")
    with pytest.raises(InvalidArgument, match="latency_ms"):
        await lb.end("a", latency, request_id)
    assert await _active(lb, "a") == 1


async def test_latency_is_an_ewma_seeded_by_the_first_sample() -> None:
    """The first sample is the average; each next one moves it by the smoothing factor."""
    lb = balancer(config=BalancerConfig(latency_smoothing=0.5))
    await lb.register(agent("a"))
    for sample in (100.0, 200.0, 0.0):
        await lb.end("a", sample)
    [load] = await lb.loads(["a"])
    assert load.avg_latency_ms == pytest.approx(75.0)  # 100 -> 150 -> 75


async def test_failed_end_counts_a_failure(lb: LoadBalancer) -> None:
    """An end marked failed adds to the agent's failed_requests."""
    await lb.register(agent("a"))
    await lb.end("a", 5.0, await lb.start("a"), failed=True)
    [load] = await lb.loads(["a"])
    assert load.failed_requests == 1


async def test_forgotten_lease_expires_as_failed() -> None:
    """A lease never ended frees its slot after the request timeout and counts as failed."""
    clock = FakeClock()
    lb = balancer(clock, BalancerConfig(request_timeout_s=60))
    await lb.register(agent("a", max_connections=1))
    request_id = (await lb.select(acquire=True)).request_id
    clock.advance(59)
    assert await lb.sweep() == (0, 0)
    clock.advance(2)
    assert await lb.sweep() == (1, 0)
    [load] = await lb.loads(["a"])
    assert (load.active_connections, load.failed_requests) == (0, 1)
    await lb.end("a", 1.0, request_id)  # late end of an expired lease: OK, no change
    [load] = await lb.loads(["a"])
    assert (load.active_connections, load.avg_latency_ms) == (0, 0.0)
    assert (await lb.select()).agent.id == "a"

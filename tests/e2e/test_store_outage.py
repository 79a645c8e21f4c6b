"""A store that stops answering, in-process: health, every RPC, upkeep, recovery.

``FlakyStore`` is a memory store that can be taken away: while ``down`` every call
raises StoreUnavailable, as the Redis store does when Redis does not answer. The real
Redis version of this is tests/cluster/test_outage.py; this one needs no Redis.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import StoreUnavailable
from lb_service.service.options import ServerOptions
from lb_service.service.server import SERVICE_NAME, LoadBalancerServer
from lb_service.store.base import Lease
from lb_service.store.feedback import Feedback
from lb_service.store.memory import MemoryStore

STORE = "redis://10.9.8.7:6379/0"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FlakyStore:
    """A MemoryStore whose every call fails with StoreUnavailable while ``down``."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.down = False
        self.checks = 0

    def _answer(self) -> None:
        if self.down:
            raise StoreUnavailable(f"store {STORE} did not answer within 500 ms")

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(found):
            return found

        async def call(*args: Any, **kwargs: Any) -> Any:
            self._answer()
            return await found(*args, **kwargs)

        return call

    async def check(self) -> None:
        self.checks += 1
        self._answer()

    async def wait_for_change(self, seen_version: int) -> int:
        # As the Redis store's poller does: an outage only delays the wake-up, so a
        # stream waiting here would stay silent unless the server ends it.
        while True:
            version = await self.inner.wait_for_change(seen_version)
            if not self.down:
                return version
            seen_version = version


@pytest.fixture
def store() -> FlakyStore:
    """A store the test can take away and bring back."""
    return FlakyStore()


@pytest.fixture
async def server(store: FlakyStore) -> AsyncIterator[LoadBalancerServer]:
    """A server over ``store`` that checks it and sweeps every 20 ms."""
    balancer = LoadBalancer(store, BalancerConfig(watch_min_interval_ms=10.0))
    options = ServerOptions(
        listen="127.0.0.1:0", grace_period_s=1.0, sweep_interval_s=0.02, store_check_interval_s=0.02
    )
    running = LoadBalancerServer(balancer, options, store=store)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def channel(server: LoadBalancerServer) -> AsyncIterator[grpc.aio.Channel]:
    """A channel to the server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


async def _health(channel: grpc.aio.Channel) -> list[int]:
    stub = health_pb2_grpc.HealthStub(channel)
    return [
        (await stub.Check(health_pb2.HealthCheckRequest(service=s))).status
        for s in ("", SERVICE_NAME)
    ]


async def _until(condition: Any, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.01)


async def test_health_follows_the_store_and_logs_each_transition_once(
    store: FlakyStore, channel: grpc.aio.Channel
) -> None:
    """Health is NOT_SERVING while the store fails its checks, SERVING again after; one log each."""
    assert await _health(channel) == [SERVING, SERVING]
    with structlog.testing.capture_logs() as logs:
        store.down = True
        await _until(lambda: _is(channel, NOT_SERVING))
        checks = store.checks
        await _until(lambda: _true(store.checks >= checks + 3))  # still down, still probing
        assert await _health(channel) == [NOT_SERVING, NOT_SERVING]
        store.down = False
        await _until(lambda: _is(channel, SERVING))
        await _until(lambda: _true(store.checks >= checks + 6))
    events = [e["event"] for e in logs if e["event"].startswith("store_")]
    assert events == ["store_unavailable", "store_recovered"]
    unavailable = next(e for e in logs if e["event"] == "store_unavailable")
    assert STORE in unavailable["error"]


async def test_every_rpc_answers_unavailable_naming_the_store_while_it_is_away(
    store: FlakyStore, channel: grpc.aio.Channel
) -> None:
    """Each lb.v1 RPC fails UNAVAILABLE with the store in its message, never UNKNOWN/INTERNAL."""
    stub = pb_grpc.LoadBalancerStub(channel)
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="h", port=1)))
    store.down = True
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "RegisterAgent": lambda: stub.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="b", host="h", port=1))
        ),
        "DeregisterAgent": lambda: stub.DeregisterAgent(pb.DeregisterAgentRequest(agent_id="a")),
        "ListAgents": lambda: stub.ListAgents(pb.ListAgentsRequest()),
        "SelectAgent": lambda: stub.SelectAgent(pb.SelectAgentRequest(acquire=True)),
        "RecordRequestStart": lambda: stub.RecordRequestStart(
            pb.RecordRequestStartRequest(agent_id="a")
        ),
        "RecordRequestEnd": lambda: stub.RecordRequestEnd(
            pb.RecordRequestEndRequest(agent_id="a", request_id="r", latency_ms=1.0)
        ),
        "GetLoads": lambda: stub.GetLoads(pb.GetLoadsRequest()),
        "GetStatistics": lambda: stub.GetStatistics(pb.GetStatisticsRequest()),
        "UpdateWeights": lambda: stub.UpdateWeights(pb.UpdateWeightsRequest(weights={"a": 2.0})),
        "SetStrategy": lambda: stub.SetStrategy(
            pb.SetStrategyRequest(strategy=pb.STRATEGY_WEIGHTED)
        ),
        "WatchLoads": lambda: stub.WatchLoads(pb.WatchLoadsRequest()).read(),
        "Heartbeat": lambda: stub.Heartbeat(pb.HeartbeatRequest(agent_id="a")),
        "DrainAgent": lambda: stub.DrainAgent(pb.DrainAgentRequest(agent_id="a")),
    }
    # Every RPC the service declares, but SelectAgents: it answers per entry (next test).
    declared = {m.name for m in pb.DESCRIPTOR.services_by_name["LoadBalancer"].methods}
    assert set(calls) == declared - {"SelectAgents"}
    for method, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call()
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, method
        assert STORE in (caught.value.details() or ""), method


async def test_a_batch_fails_each_entry_unavailable_without_waiting_on_each(
    store: FlakyStore, channel: grpc.aio.Channel
) -> None:
    """SelectAgents answers every entry UNAVAILABLE (STORE_UNAVAILABLE) after one failed pick."""
    stub = pb_grpc.LoadBalancerStub(channel)
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="h", port=1)))
    store.down = True
    reply = await stub.SelectAgents(pb.SelectAgentsRequest(requests=[pb.SelectAgentRequest()] * 5))

    assert [r.WhichOneof("result") for r in reply.results] == ["error"] * 5
    assert {r.error.code for r in reply.results} == {grpc.StatusCode.UNAVAILABLE.value[0]}
    assert {r.error.reason for r in reply.results} == {"STORE_UNAVAILABLE"}
    assert all(STORE in r.error.message for r in reply.results)


async def test_an_open_watch_ends_unavailable_when_the_store_goes_away(
    store: FlakyStore, channel: grpc.aio.Channel
) -> None:
    """An open WatchLoads stream ends UNAVAILABLE naming the store, though its wait never fails."""
    stub = pb_grpc.LoadBalancerStub(channel)
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="h", port=1)))
    stream = stub.WatchLoads(pb.WatchLoadsRequest())
    assert (await stream.read()).loads[0].agent_id == "a"

    store.down = True
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(_read_to_end(stream), 5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert STORE in (caught.value.details() or "")


async def test_upkeep_survives_an_outage_and_sweeps_again_after(
    store: FlakyStore,
    server: LoadBalancerServer,
    channel: grpc.aio.Channel,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sweeps fail quietly while the store is away and run again once it is back."""
    stub = pb_grpc.LoadBalancerStub(channel)
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="h", port=1)))
    store.down = True
    await _until(lambda: _true(not server.store_available))
    await asyncio.sleep(0.1)  # several sweep intervals pass while the store is down
    store.down = False
    sweeps = 0
    original = store.inner.expire_sessions

    async def counted(idle_since_ms: int) -> int:
        nonlocal sweeps
        sweeps += 1
        return await original(idle_since_ms)

    monkeypatch.setattr(store.inner, "expire_sessions", counted)
    await _until(lambda: _true(sweeps >= 2))
    assert server.store_available
    assert (await stub.ListAgents(pb.ListAgentsRequest())).agents[0].id == "a"


async def test_a_server_whose_store_is_away_at_start_starts_not_serving(
    store: FlakyStore,
) -> None:
    """Started while its store does not answer, a server reports NOT_SERVING until it does."""
    store.down = True
    balancer = LoadBalancer(store)
    options = ServerOptions(listen="127.0.0.1:0", store_check_interval_s=0.02)
    server = LoadBalancerServer(balancer, options, store=store)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert await _health(channel) == [NOT_SERVING, NOT_SERVING]
            store.down = False
            await _until(lambda: _is(channel, SERVING))
    finally:
        await server.stop(0)


async def _is(channel: grpc.aio.Channel, status: int) -> bool:
    return await _health(channel) == [status, status]


async def _true(value: bool) -> bool:
    return value


async def _read_to_end(stream: Any) -> None:
    while await stream.read() is not grpc.aio.EOF:
        pass
    raise AssertionError("the stream ended with OK while the store was away")


async def test_a_sweep_that_fails_between_checks_is_logged_and_the_loop_goes_on(
    store: FlakyStore, server: LoadBalancerServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep failing with StoreUnavailable while checks pass logs sweep_failed; upkeep goes on."""
    original = store.inner.expire_leases
    calls = 0

    async def failing(started_before_ms: int, now_ms: int, feedback: Feedback) -> list[Lease]:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise StoreUnavailable(f"store {STORE} did not answer within 500 ms")
        return await original(started_before_ms, now_ms, feedback)

    monkeypatch.setattr(store.inner, "expire_leases", failing)
    with structlog.testing.capture_logs() as logs:
        await _until(lambda: _true(calls >= 4))
    failed = [e for e in logs if e["event"] == "sweep_failed"]
    assert len(failed) == 2
    assert STORE in failed[0]["error"]

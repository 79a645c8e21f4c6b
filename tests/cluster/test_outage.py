"""Guarantee 6: Redis stopped and restarted under traffic; the replicas ride it out.

The test owns its Redis (a private ``redis-server``; the session's may be shared), stops
it while three replicas serve traffic, and starts it again on the same port. It has no
persistence, so the restarted Redis is empty: agents register again, as live agents
re-registering after an outage would.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from lb.v1 import load_balancer_pb2 as pb

from tests.cluster.conftest import Connect, StartCluster
from tests.cluster.replicas import Client, eventually
from tests.redis_server import PrivateRedis

AGENTS = ("agent-0", "agent-1", "agent-2", "agent-3")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def own_redis() -> Iterator[PrivateRedis]:
    """A private redis-server this test may stop and start again."""
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()


class Traffic:
    """Acquire/end pairs over every replica in a loop, recording each call's outcome."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.phase = "before"
        #: (phase, method, code name, details) of every call.
        self.outcomes: list[tuple[str, str, str, str]] = []
        self._stop = asyncio.Event()
        self._pick = pb.SelectAgentResponse()
        self._task = asyncio.ensure_future(self._run())

    def ok(self, phase: str) -> int:
        """How many calls succeeded in ``phase``."""
        return sum(1 for p, _, code, _ in self.outcomes if p == phase and code == "OK")

    async def stop(self) -> None:
        """Stop after the call in flight."""
        self._stop.set()
        await self._task

    async def _run(self) -> None:
        turn = 0
        while not self._stop.is_set():
            for method, call in (("SelectAgent", self._acquire), ("RecordRequestEnd", self._end)):
                phase = self.phase
                try:
                    await call(turn)
                    code, details = "OK", ""
                except grpc.aio.AioRpcError as error:
                    code, details = error.code().name, error.details() or ""
                # A call that spans a change of phase belongs to neither side of it.
                label = phase if phase == self.phase else f"{phase}->{self.phase}"
                self.outcomes.append((label, method, code, details))
                if code != "OK":
                    await asyncio.sleep(0.02)
                    break
            turn += 1

    async def _acquire(self, turn: int) -> None:
        self._pick = await self.client.stub(turn).SelectAgent(
            pb.SelectAgentRequest(acquire=True), timeout=5
        )

    async def _end(self, turn: int) -> None:
        pick = self._pick
        await self.client.stub(turn + 1).RecordRequestEnd(
            pb.RecordRequestEndRequest(
                agent_id=pick.agent.id, request_id=pick.request_id, latency_ms=1.0
            ),
            timeout=5,
        )


async def _every_rpc_fails_unavailable(client: Client, replica: int, store: str) -> None:
    """Every lb.v1 RPC answers UNAVAILABLE naming the store, never UNKNOWN or INTERNAL."""
    stub = client.stub(replica)
    calls = {
        "RegisterAgent": stub.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="late", host="h", port=1))
        ),
        "DeregisterAgent": stub.DeregisterAgent(pb.DeregisterAgentRequest(agent_id="agent-0")),
        "ListAgents": stub.ListAgents(pb.ListAgentsRequest()),
        "SelectAgent": stub.SelectAgent(pb.SelectAgentRequest(acquire=True)),
        "RecordRequestStart": stub.RecordRequestStart(
            pb.RecordRequestStartRequest(agent_id="agent-0")
        ),
        "RecordRequestEnd": stub.RecordRequestEnd(
            pb.RecordRequestEndRequest(agent_id="agent-0", request_id="r-1", latency_ms=1.0)
        ),
        "GetLoads": stub.GetLoads(pb.GetLoadsRequest()),
        "GetStatistics": stub.GetStatistics(pb.GetStatisticsRequest()),
        "UpdateWeights": stub.UpdateWeights(pb.UpdateWeightsRequest(weights={"agent-0": 2.0})),
        "SetStrategy": stub.SetStrategy(pb.SetStrategyRequest(strategy=pb.STRATEGY_ROUND_ROBIN)),
        "Heartbeat": stub.Heartbeat(pb.HeartbeatRequest(agent_id="agent-0")),
        "DrainAgent": stub.DrainAgent(pb.DrainAgentRequest(agent_id="agent-0")),
    }
    # Every RPC the service declares: these unary ones here, the stream and the batch below.
    declared = {m.name for m in pb.DESCRIPTOR.services_by_name["LoadBalancer"].methods}
    assert set(calls) == declared - {"WatchLoads", "SelectAgents"}
    for method, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call, 10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (method, caught.value)
        assert store in (caught.value.details() or ""), (method, caught.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(stub.WatchLoads(pb.WatchLoadsRequest()).read(), 10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert store in (caught.value.details() or "")
    # A batch answers per entry, as the contract says; each entry is UNAVAILABLE.
    batch = await stub.SelectAgents(
        pb.SelectAgentsRequest(requests=[pb.SelectAgentRequest()] * 3), timeout=10
    )
    assert [r.error.code for r in batch.results] == [grpc.StatusCode.UNAVAILABLE.value[0]] * 3
    assert {r.error.reason for r in batch.results} == {"STORE_UNAVAILABLE"}
    assert all(store in r.error.message for r in batch.results)


async def test_redis_restart_under_traffic_is_ridden_out_without_restarting_replicas(
    cluster: StartCluster, connect: Connect, own_redis: PrivateRedis
) -> None:
    """Redis down: UNAVAILABLE naming it and NOT_SERVING; back: SERVING and service, same PIDs."""
    replicas = cluster(3, "--store-timeout-ms", "200", store=own_redis.url)
    pids = [replica.process.pid for replica in replicas]
    client = connect(replicas)
    await client.register(*AGENTS)
    store = f"127.0.0.1:{own_redis.port}"
    watches = [
        client.stub(r).WatchLoads(pb.WatchLoadsRequest(min_interval_ms=20)) for r in range(3)
    ]
    for watch in watches:
        await watch.read()
    traffic = Traffic(client)
    await eventually(lambda: traffic.ok("before") >= 30)

    own_redis.stop()
    traffic.phase = "going-down"

    async def health_is(status: int) -> bool:
        states = [await client.health_status(r) for r in range(3)]
        return all(state == [status, status] for state in states)

    await eventually(lambda: health_is(NOT_SERVING))
    traffic.phase = "down"
    for watch in watches:  # open streams end with UNAVAILABLE naming the store
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(_read_to_end(watch), 10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert store in (caught.value.details() or "")
    for replica in range(3):
        await _every_rpc_fails_unavailable(client, replica, store)
    await eventually(lambda: _count(traffic, "down") >= 5)

    own_redis.start()
    traffic.phase = "coming-back"
    await eventually(lambda: health_is(SERVING))
    # The restarted Redis has no persistence: the agents register again, as live
    # agents would, and the traffic goes through every replica again.
    await client.register(*AGENTS)
    traffic.phase = "after"
    await eventually(lambda: traffic.ok("after") >= 30)
    await traffic.stop()

    codes = collections.Counter((phase, code) for phase, _, code, _ in traffic.outcomes)
    assert {code for (phase, code) in codes if phase == "before"} == {"OK"}, codes
    assert {code for (phase, code) in codes if phase == "down"} == {"UNAVAILABLE"}, codes
    assert all(store in details for phase, _, _, details in traffic.outcomes if phase == "down")
    # Whenever it happened, no call ever failed with anything but UNAVAILABLE, or
    # NOT_FOUND for a lease opened before the data went away with Redis.
    assert {code for (_, code) in codes} <= {"OK", "UNAVAILABLE", "NOT_FOUND"}, codes
    assert {code for (phase, code) in codes if phase == "after"} == {"OK"}, codes
    assert [replica.process.pid for replica in replicas] == pids
    assert all(replica.process.poll() is None for replica in replicas)
    for process in replicas:  # one log line per transition, not one per probe
        assert len(process.named("store_unavailable")) == 1
        assert len(process.named("store_recovered")) == 1
    stats = await client.stub(0).GetStatistics(pb.GetStatisticsRequest(), timeout=5)
    assert stats.total_selections > 0


def _count(traffic: Traffic, phase: str) -> int:
    return sum(1 for p, *_ in traffic.outcomes if p == phase)


async def _read_to_end(stream: Any) -> None:
    while await stream.read() is not grpc.aio.EOF:
        pass
    raise AssertionError("a WatchLoads stream ended with OK while Redis was down")

"""End to end over a real socket: every RPC, the load stream, health, reflection, shutdown."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import SERVICE_NAME, LoadBalancerServer
from lb_service.store.memory import MemoryStore

HANG_GUARD_S = 5.0


def _agent(
    agent_id: str, vram_gb: float = 0.0, models: tuple[str, ...] = ("llama3:8b",)
) -> pb.Agent:
    return pb.Agent(
        id=agent_id,
        host=f"{agent_id}.local",
        port=11434,
        models=models,
        hardware=pb.Hardware(gpu="A100" if vram_gb else "", vram_gb=vram_gb, cpu_cores=16),
        metadata={"zone": "eu-1"},
    )


async def _register(stub: pb_grpc.LoadBalancerStub, *agents: pb.Agent) -> None:
    for agent in agents:
        await stub.RegisterAgent(pb.RegisterAgentRequest(agent=agent))


async def test_dispatcher_round_trip(stub: pb_grpc.LoadBalancerStub) -> None:
    """Register, list, select with acquire, end, then loads and statistics agree over the wire."""
    await _register(stub, _agent("cpu"), _agent("gpu", 80, ("llama3:8b", "llama3:70b")))
    listed = await stub.ListAgents(pb.ListAgentsRequest())
    assert [a.id for a in listed.agents] == ["cpu", "gpu"]
    assert listed.agents[1] == _agent("gpu", 80, ("llama3:8b", "llama3:70b"))

    picked = await stub.SelectAgent(
        pb.SelectAgentRequest(
            task=pb.TaskRequirements(model="llama3:70b", compute=pb.COMPUTE_GPU), acquire=True
        )
    )
    assert (picked.agent.id, picked.strategy) == ("gpu", pb.STRATEGY_LEAST_CONNECTIONS)
    assert picked.request_id

    started = await stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="cpu"))
    await stub.RecordRequestEnd(
        pb.RecordRequestEndRequest(request_id=picked.request_id, latency_ms=250.0)
    )
    await stub.RecordRequestEnd(
        pb.RecordRequestEndRequest(
            agent_id="cpu", request_id=started.request_id, latency_ms=50.0, failed=True
        )
    )
    loads = {load.agent_id: load for load in (await stub.GetLoads(pb.GetLoadsRequest())).loads}
    assert (loads["gpu"].avg_latency_ms, loads["gpu"].weight, loads["gpu"].active_connections) == (
        250.0,
        80.0,
        0,
    )
    assert (loads["cpu"].failed_requests, loads["cpu"].total_requests) == (1, 1)
    assert loads["cpu"].last_request_at_ms > 0

    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    assert (stats.total_selections, stats.total_requests, stats.active_connections) == (1, 2, 0)
    assert stats.avg_latency_ms == 150.0
    assert dict(stats.selections_by_agent) == {"gpu": 1}


async def test_admin_rpcs(stub: pb_grpc.LoadBalancerStub) -> None:
    """Weights, strategy and deregistration change what later calls see."""
    await _register(stub, _agent("a", 24), _agent("b"))
    updated = await stub.UpdateWeights(pb.UpdateWeightsRequest(weights={"b": 0.0}))
    assert dict(updated.weights) == {"a": 24.0, "b": 0.0}
    changed = await stub.SetStrategy(pb.SetStrategyRequest(strategy=pb.STRATEGY_WEIGHTED))
    assert changed.previous == pb.STRATEGY_LEAST_CONNECTIONS
    picked = await stub.SelectAgent(pb.SelectAgentRequest())
    assert (picked.agent.id, picked.strategy) == ("a", pb.STRATEGY_WEIGHTED)
    await stub.DeregisterAgent(pb.DeregisterAgentRequest(agent_id="a"))
    assert [a.id for a in (await stub.ListAgents(pb.ListAgentsRequest())).agents] == ["b"]


async def test_session_is_sticky_over_the_wire(stub: pb_grpc.LoadBalancerStub) -> None:
    """A session's second request is answered from its binding and says so."""
    await _register(stub, _agent("a"), _agent("b"))
    first = await stub.SelectAgent(pb.SelectAgentRequest(session_id="chat-1"))
    second = await stub.SelectAgent(pb.SelectAgentRequest(session_id="chat-1"))
    assert (second.agent.id, first.sticky, second.sticky) == (first.agent.id, False, True)


@pytest.mark.parametrize(
    ("call", "request_message", "code"),
    [
        ("SelectAgent", pb.SelectAgentRequest(), grpc.StatusCode.UNAVAILABLE),
        ("SetStrategy", pb.SetStrategyRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("DeregisterAgent", pb.DeregisterAgentRequest(agent_id="x"), grpc.StatusCode.NOT_FOUND),
        ("RegisterAgent", pb.RegisterAgentRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_errors_arrive_as_status_codes(
    stub: pb_grpc.LoadBalancerStub, call: str, request_message: object, code: grpc.StatusCode
) -> None:
    """Domain errors reach a real client as their documented status code and a message."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(stub, call)(request_message)
    assert caught.value.code() == code
    assert caught.value.details()


async def test_watch_sends_snapshot_then_coalesced_update(stub: pb_grpc.LoadBalancerStub) -> None:
    """The stream opens with a full snapshot, then one update carrying a burst of changes."""
    await _register(stub, _agent("a"), _agent("b"))
    call = stub.WatchLoads(pb.WatchLoadsRequest(min_interval_ms=200))
    first = await asyncio.wait_for(call.read(), HANG_GUARD_S)
    assert [load.agent_id for load in first.loads] == ["a", "b"]
    assert first.timestamp_ms > 0
    for _ in range(3):
        await stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="b"))
    update = await asyncio.wait_for(call.read(), HANG_GUARD_S)
    # Three starts within one interval arrive together: one update, not three.
    assert [load.active_connections for load in update.loads] == [0, 3]
    call.cancel()


async def test_watch_unknown_agent_is_not_found(stub: pb_grpc.LoadBalancerStub) -> None:
    """Watching an unknown agent ends the stream with NOT_FOUND."""
    call = stub.WatchLoads(pb.WatchLoadsRequest(agent_ids=["ghost"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call.read(), HANG_GUARD_S)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    """The standard health service answers SERVING for the server and for lb.v1.LoadBalancer."""
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(channel: grpc.aio.Channel) -> None:
    """Server reflection names lb.v1.LoadBalancer, so grpcurl works without the proto."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in reply.list_services_response.service}
        break
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


async def test_stop_ends_streams_cleanly(
    server: LoadBalancerServer, stub: pb_grpc.LoadBalancerStub, channel: grpc.aio.Channel
) -> None:
    """On shutdown an open watch stream ends with OK instead of being cut off."""
    await _register(stub, _agent("a"))
    call = stub.WatchLoads(pb.WatchLoadsRequest())
    await asyncio.wait_for(call.read(), HANG_GUARD_S)
    await asyncio.wait_for(server.stop(grace_period_s=HANG_GUARD_S), HANG_GUARD_S * 2)
    assert await asyncio.wait_for(call.read(), HANG_GUARD_S) is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK


async def test_abandoned_lease_expires_on_a_live_server() -> None:
    """A lease whose dispatcher never ends it is expired by the server's sweep, as failed."""
    balancer = LoadBalancer(MemoryStore(), BalancerConfig(request_timeout_s=0.05))
    running = LoadBalancerServer(
        balancer, ServerOptions(listen="127.0.0.1:0", sweep_interval_s=0.02)
    )
    await running.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            await _register(stub, _agent("a"))
            await stub.SelectAgent(pb.SelectAgentRequest(acquire=True))
            watch = stub.WatchLoads(pb.WatchLoadsRequest(agent_ids=["a"]))
            load = (await asyncio.wait_for(watch.read(), HANG_GUARD_S)).loads[0]
            while load.active_connections:  # updates arrive as the sweep changes the load
                load = (await asyncio.wait_for(watch.read(), HANG_GUARD_S)).loads[0]
            watch.cancel()
        assert (load.active_connections, load.failed_requests, load.total_requests) == (0, 1, 1)
    finally:
        await running.stop(0)

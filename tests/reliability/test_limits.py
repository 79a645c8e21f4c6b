"""Limits over the wire: each is refused with its code and an actionable message, unchanged."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Iterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore
from tests.e2e import processes

HANG_GUARD_S = 20.0
LIMITS = BalancerConfig(max_candidates=10, max_agents=5, max_sessions=3, max_leases=3)
MAX_MESSAGE = 64 * 1024


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.LoadBalancerStub]:
    """A client of a real server with small limits and one registered agent."""
    server = LoadBalancerServer(
        LoadBalancer(MemoryStore(), LIMITS),
        ServerOptions(listen="127.0.0.1:0", grace_period_s=1.0, max_message_bytes=MAX_MESSAGE),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            client = pb_grpc.LoadBalancerStub(channel)
            await client.RegisterAgent(
                pb.RegisterAgentRequest(agent=pb.Agent(id="a0", host="10.0.0.1", port=11434))
            )
            yield client
    finally:
        await server.stop(0)


async def _seen(stub: pb_grpc.LoadBalancerStub) -> tuple[bytes, ...]:
    """What a client sees of the state, byte for byte (failed selections left out)."""
    stats = await stub.GetStatistics(pb.GetStatisticsRequest())
    stats.failed_selections = 0
    return (
        (await stub.ListAgents(pb.ListAgentsRequest())).SerializeToString(deterministic=True),
        (await stub.GetLoads(pb.GetLoadsRequest())).SerializeToString(deterministic=True),
        stats.SerializeToString(deterministic=True),
    )


async def _refused(
    stub: pb_grpc.LoadBalancerStub, call: Awaitable[object], code: grpc.StatusCode, words: str
) -> grpc.aio.AioRpcError:
    """Run ``call``; it must fail with ``code``, a message containing ``words``, and no change."""
    before = await _seen(stub)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code
    assert words in (caught.value.details() or "")
    assert await _seen(stub) == before
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    return str(info.reason)


async def test_a_request_over_the_message_size_is_resource_exhausted(
    stub: pb_grpc.LoadBalancerStub,
) -> None:
    """A request larger than max_message_bytes is refused by gRPC before anything runs."""
    big = pb.RegisterAgentRequest(agent=pb.Agent(id="big", host="h" * (MAX_MESSAGE + 1)))
    await _refused(
        stub, stub.RegisterAgent(big), grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max"
    )


async def test_too_many_candidates_is_invalid_argument(stub: pb_grpc.LoadBalancerStub) -> None:
    """One candidate past max_candidates is INVALID_ARGUMENT naming the option and the way out."""
    request = pb.SelectAgentRequest(
        candidates=[pb.Agent(id=f"c{i}", host="10.0.0.1", port=11434) for i in range(11)]
    )
    await _refused(
        stub,
        stub.SelectAgent(request),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most 10 candidates may be passed per request (max_candidates)",
    )


async def test_the_registry_stops_at_max_agents(stub: pb_grpc.LoadBalancerStub) -> None:
    """Past max_agents every new id is RESOURCE_EXHAUSTED (LIMIT_EXCEEDED), however many come."""
    for i in range(1, 5):
        await stub.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id=f"a{i}", host="10.0.0.1", port=11434))
        )
    error = await _refused(
        stub,
        stub.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="one-too-many", host="10.0.0.1", port=11434))
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "5 agents are registered, the most allowed (max_agents)",
    )
    assert _reason(error) == "LIMIT_EXCEEDED"
    for i in range(200):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.RegisterAgent(
                pb.RegisterAgentRequest(agent=pb.Agent(id=f"x{i}", host="10.0.0.1", port=11434))
            )
    assert len((await stub.ListAgents(pb.ListAgentsRequest())).agents) == 5
    await stub.RegisterAgent(
        pb.RegisterAgentRequest(agent=pb.Agent(id="a4", host="10.0.0.1", port=1))
    )


async def test_new_sessions_stop_at_max_sessions(stub: pb_grpc.LoadBalancerStub) -> None:
    """Past max_sessions a pick in a new session is RESOURCE_EXHAUSTED; old sessions still stick."""
    for i in range(3):
        await stub.SelectAgent(pb.SelectAgentRequest(session_id=f"s{i}"))
    await _refused(
        stub,
        stub.SelectAgent(pb.SelectAgentRequest(session_id="s-new")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "retry without session_id",
    )
    assert (await stub.SelectAgent(pb.SelectAgentRequest(session_id="s0"))).sticky


async def test_leases_stop_at_max_leases(stub: pb_grpc.LoadBalancerStub) -> None:
    """Past max_leases both RecordRequestStart and an acquiring pick are RESOURCE_EXHAUSTED."""
    for _ in range(3):
        await stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="a0"))
    for call in (
        stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="a0")),
        stub.SelectAgent(pb.SelectAgentRequest(acquire=True)),
    ):
        await _refused(
            stub, call, grpc.StatusCode.RESOURCE_EXHAUSTED, "3 leases are open, the most allowed"
        )
    await stub.RecordRequestEnd(pb.RecordRequestEndRequest(agent_id="a0", latency_ms=1.0))
    assert (await stub.SelectAgent(pb.SelectAgentRequest(acquire=True))).request_id


@pytest.fixture
def limited_process() -> Iterator[subprocess.Popen[str]]:
    """The real lb-service process with its limits set by flags."""
    proc = processes.start("--max-agents", "1", "--max-message-bytes", "2048")
    yield proc
    processes.stop(proc)


def test_limit_flags_reach_the_server(limited_process: subprocess.Popen[str]) -> None:
    """--max-agents and --max-message-bytes on the command line are the limits served."""
    port = processes.port(limited_process)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        client = pb_grpc.LoadBalancerStub(channel)
        client.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="10.0.0.1", port=11434)),
            timeout=HANG_GUARD_S,
        )
        with pytest.raises(grpc.RpcError) as second:
            client.RegisterAgent(
                pb.RegisterAgentRequest(agent=pb.Agent(id="b", host="10.0.0.1", port=11434))
            )
        with pytest.raises(grpc.RpcError) as large:
            client.GetLoads(pb.GetLoadsRequest(agent_ids=["x" * 1000] * 3))
    assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert large.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

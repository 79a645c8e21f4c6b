"""SelectAgents over a real socket, and an extra service served on the same server stack."""

from __future__ import annotations

import grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore


def _agent(agent_id: str, models: tuple[str, ...] = ("llama3:8b",)) -> pb.Agent:
    return pb.Agent(id=agent_id, host=f"{agent_id}.local", port=11434, models=models)


async def test_select_agents_answers_each_entry_over_the_wire(
    stub: pb_grpc.LoadBalancerStub,
) -> None:
    """A batch comes back with a selection or an error per entry, and its leases are real."""
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=_agent("a")))
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=_agent("b", ("llama3:70b",))))

    response = await stub.SelectAgents(
        pb.SelectAgentsRequest(
            requests=[
                pb.SelectAgentRequest(acquire=True),
                pb.SelectAgentRequest(task=pb.TaskRequirements(model="gone")),
                pb.SelectAgentRequest(task=pb.TaskRequirements(model="llama3:70b")),
            ]
        )
    )

    first, refused, last = response.results
    assert (first.selection.agent.id, first.selection.agent.host) == ("a", "a.local")
    assert refused.error == pb.SelectAgentError(
        code=grpc.StatusCode.FAILED_PRECONDITION.value[0],
        message="no agent serves model 'gone'",
        reason="NO_ELIGIBLE_AGENT",
    )
    assert last.selection.agent.id == "b"
    await stub.RecordRequestEnd(
        pb.RecordRequestEndRequest(request_id=first.selection.request_id, latency_ms=5.0)
    )
    loads = await stub.GetLoads(pb.GetLoadsRequest(agent_ids=["a"]))
    assert (loads.loads[0].active_connections, loads.loads[0].total_requests) == (0, 1)


async def test_added_handlers_are_served_behind_the_same_stack() -> None:
    """A generic handler added before start answers on the server's port beside lb.v1."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler(
        "test.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server = LoadBalancerServer(LoadBalancer(MemoryStore()), ServerOptions(listen="127.0.0.1:0"))
    server.add_generic_rpc_handlers([handler])
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary("/test.Echo/Echo")(b"ping") == b"ping"
            listed = await pb_grpc.LoadBalancerStub(channel).ListAgents(pb.ListAgentsRequest())
            assert list(listed.agents) == []
    finally:
        await server.stop(0)


async def test_a_batch_never_outgrows_what_a_default_client_receives(
    stub: pb_grpc.LoadBalancerStub,
) -> None:
    """200 acquires of an agent with 60 KB of metadata: the answer arrives, the excess is refused.

    The first entries are made until the next one could push the answer past the 4 MiB
    a default gRPC client receives; the rest come back RESOURCE_EXHAUSTED and open no
    lease, so no lease is left open for an answer that never arrives.
    """
    big = _agent("big")
    big.metadata["notes"] = "x" * 60_000
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=big))
    response = await stub.SelectAgents(
        pb.SelectAgentsRequest(requests=[pb.SelectAgentRequest(acquire=True)] * 200)
    )
    made = [r for r in response.results if r.WhichOneof("result") == "selection"]
    refused = [r.error for r in response.results if r.WhichOneof("result") == "error"]
    assert len(made) + len(refused) == 200
    assert 40 <= len(made) < 70  # about (4 MiB - the reserve) / 60 KB
    assert all(r.selection.agent.id == "big" for r in response.results[: len(made)])
    assert {(e.code, e.reason) for e in refused} == {
        (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], "LIMIT_EXCEEDED")
    }
    assert refused[0].message.startswith(f"entries {len(made)} to 199 were not made")
    assert response.ByteSize() < 4 * 1024 * 1024
    [load] = (await stub.GetLoads(pb.GetLoadsRequest(agent_ids=["big"]))).loads
    assert load.active_connections == len(made)


async def test_a_batch_of_small_agents_is_made_in_full(stub: pb_grpc.LoadBalancerStub) -> None:
    """The answer's bound does not cut an ordinary batch: 1,000 acquires are all made."""
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=_agent("a")))
    response = await stub.SelectAgents(
        pb.SelectAgentsRequest(requests=[pb.SelectAgentRequest(acquire=True)] * 1000)
    )
    assert all(r.WhichOneof("result") == "selection" for r in response.results)
    assert len(response.results) == 1000

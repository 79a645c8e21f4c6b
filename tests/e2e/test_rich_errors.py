"""INVALID_ARGUMENT over a real socket: ErrorInfo and a google.rpc.BadRequest naming the field."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.service.status import MAX_FIELD_BYTES
from lb_service.store.memory import MemoryStore
from lb_service.validation import MAX_ID_LENGTH


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.LoadBalancerStub]:
    """A stub on a live server."""
    server = LoadBalancerServer(LoadBalancer(MemoryStore()), ServerOptions(listen="127.0.0.1:0"))
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield pb_grpc.LoadBalancerStub(channel)
    await server.stop(0)


def _details(error: grpc.aio.AioRpcError) -> tuple[str, list[tuple[str, str]]]:
    """The ErrorInfo reason and the BadRequest field violations of a failed call."""
    status = rpc_status.from_call(error)
    assert status is not None
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert status.details[0].Unpack(info)
    assert status.details[1].Unpack(bad)
    return info.reason, [(v.field, v.description) for v in bad.field_violations]


async def test_a_bad_port_names_agent_port(stub: pb_grpc.LoadBalancerStub) -> None:
    """RegisterAgent with port 70000 fails with ErrorInfo and a violation on agent.port."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="a.local", port=70000))
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, violations = _details(caught.value)
    assert reason == "INVALID_ARGUMENT"
    assert violations == [
        ("agent.port", "agent.port: must be from 1 to 65535, got 70000 (agent 'a')")
    ]


async def test_a_long_field_path_is_cut_and_the_trailers_still_fit(
    stub: pb_grpc.LoadBalancerStub,
) -> None:
    """A violation on a 1024-character weights key arrives with its path cut to fit the trailers."""
    long_id = pb.Agent(id="é" * MAX_ID_LENGTH, host="a.local", port=11434)
    await stub.RegisterAgent(pb.RegisterAgentRequest(agent=long_id))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.UpdateWeights(pb.UpdateWeightsRequest(weights={"é" * MAX_ID_LENGTH: math.nan}))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, [(field, description)] = _details(caught.value)
    assert field.startswith("weights[éé")
    assert len(field.encode()) <= MAX_FIELD_BYTES
    assert description.endswith("must be a finite number >= 0, got nan")

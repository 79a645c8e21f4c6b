"""select_many on both clients: one Selection or ClientError per request, in order."""

from __future__ import annotations

import grpc
import pytest

from lb_service.client import AsyncLoadBalancerClient, ClientError, LoadBalancerClient
from lb_service.model import (
    Agent,
    Compute,
    Hardware,
    Selection,
    SelectionRequest,
    StrategyName,
    Task,
)
from tests.client.serving import ThreadServer

CPU = Agent("cpu-1", host="10.0.0.11", port=11434, models=("llama3:8b",),
            hardware=Hardware(cpu_cores=32))  # fmt: skip
GPU = Agent("gpu-1", host="10.0.0.21", port=11434, models=("llama3:8b", "llama3:70b"),
            hardware=Hardware(gpu="A100", vram_gb=80.0), metadata={"zone": "eu-1"})  # fmt: skip

#: A GPU pick with a lease, a pick no agent can take, a sticky CPU pick, a candidate pick.
REQUESTS = [
    SelectionRequest(Task(model="llama3:70b", compute=Compute.GPU), acquire=True),
    SelectionRequest(Task(model="mixtral:8x22b")),
    SelectionRequest(Task(compute=Compute.CPU), session_id="chat-1"),
    SelectionRequest(candidates=(Agent("side-car", host="10.0.0.9", port=9000),)),
]


def _check(outcomes: list[Selection | ClientError]) -> None:
    """The outcomes REQUESTS must give over a registry of CPU and GPU."""
    assert len(outcomes) == 4
    gpu, refused, cpu, candidate = outcomes
    assert isinstance(gpu, Selection)
    assert (gpu.agent, gpu.strategy, gpu.sticky) == (GPU, StrategyName.LEAST_CONNECTIONS, False)
    assert gpu.request_id
    assert isinstance(refused, ClientError)
    assert (refused.code, refused.reason, refused.message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NO_ELIGIBLE_AGENT",
        "no agent serves model 'mixtral:8x22b'",
    )
    assert cpu == Selection(CPU, StrategyName.LEAST_CONNECTIONS)
    assert candidate == Selection(
        Agent("side-car", host="10.0.0.9", port=9000), StrategyName.LEAST_CONNECTIONS
    )


def test_blocking_client_returns_one_outcome_per_request(client: LoadBalancerClient) -> None:
    """select_many returns, in order, each request's Selection or the ClientError it met."""
    client.register(CPU)
    client.register(GPU)

    outcomes = client.select_many(REQUESTS)

    _check(outcomes)
    lease = outcomes[0]
    assert isinstance(lease, Selection)
    client.end(lease.request_id, latency_ms=12.0)  # the lease is an ordinary one
    assert client.select(compute=Compute.CPU, session_id="chat-1").sticky


async def test_asyncio_client_returns_one_outcome_per_request(server: ThreadServer) -> None:
    """The asyncio client's select_many answers exactly as the blocking one does."""
    async with AsyncLoadBalancerClient(server.target) as client:
        await client.register(CPU)
        await client.register(GPU)

        _check(await client.select_many(REQUESTS))
        assert await client.select_many([]) == []


def test_an_oversized_batch_raises_for_the_whole_call(client: LoadBalancerClient) -> None:
    """More than 1000 requests fail the call with INVALID_ARGUMENT instead of per entry."""
    client.register(CPU)

    with pytest.raises(ClientError) as raised:
        client.select_many([SelectionRequest()] * 1001)

    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert client.statistics().total_selections == 0

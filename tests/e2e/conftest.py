"""A real grpc.aio server on an ephemeral loopback port, and a client channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore


@pytest.fixture
async def server() -> AsyncIterator[LoadBalancerServer]:
    """A started server on 127.0.0.1 with a free port; stopped after the test."""
    balancer = LoadBalancer(MemoryStore(), BalancerConfig())
    running = LoadBalancerServer(balancer, ServerOptions(listen="127.0.0.1:0", grace_period_s=1.0))
    await running.start()
    try:
        yield running
    finally:
        await running.stop(0)


@pytest.fixture
async def channel(server: LoadBalancerServer) -> AsyncIterator[grpc.aio.Channel]:
    """An insecure channel to the test server."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.LoadBalancerStub:
    """A generated lb.v1 client stub on the test channel."""
    return pb_grpc.LoadBalancerStub(channel)

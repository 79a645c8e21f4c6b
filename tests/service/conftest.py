"""Fixtures for servicer tests: the real async servicer behind grpc_testing."""

from __future__ import annotations

from collections.abc import Iterator

import grpc_testing
import pytest

from lb_service.balancer import LoadBalancer
from lb_service.service.servicer import LoadBalancerServicer
from tests.factories import FakeClock, balancer
from tests.service.aio_adapter import AioServicerAdapter, LoopThread
from tests.service.harness import SERVICE, Harness


@pytest.fixture
def harness(clock: FakeClock) -> Iterator[Harness]:
    """A LoadBalancerServicer over a fresh balancer driven by ``clock``, under grpc_testing.

    The balancer, its store and the servicer are built on the background loop, since
    their asyncio events belong to the loop every RPC coroutine then runs on. Teardown
    ends open WatchLoads streams the way server shutdown does, waits for the handlers
    to finish, then stops the loop.
    """
    loop = LoopThread()

    async def build() -> tuple[LoadBalancer, LoadBalancerServicer]:
        core = balancer(clock)
        return core, LoadBalancerServicer(core)

    core, servicer = loop.run(build())
    adapter = AioServicerAdapter(servicer, loop, SERVICE)
    server = grpc_testing.server_from_dictionary(
        {SERVICE: adapter}, grpc_testing.strict_real_time()
    )
    try:
        yield Harness(server, loop, clock, core, servicer, adapter)
    finally:
        loop.call(servicer.begin_shutdown)
        idle = adapter.wait_idle()
        loop.close()
    assert idle, "an RPC handler was still running at teardown"

"""The grpc_testing adapter itself, on toy async servicers, so servicer tests can trust it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import NamedTuple

import grpc
import grpc_testing
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from tests.service.aio_adapter import AioContext, AioServicerAdapter, LoopThread
from tests.service.harness import SERVICE

METADATA = (("grpc-status-details-bin", b"\x08\x05"), ("x-why", "because"))


class Toy(pb_grpc.LoadBalancerServicer):
    """Only the RPCs the tests call are async; the rest stay the generated stubs."""

    def __init__(self) -> None:
        self.stream_closed = False
        self.never = asyncio.Event()

    async def ListAgents(  # noqa: N802
        self, request: pb.ListAgentsRequest, context: AioContext
    ) -> pb.ListAgentsResponse:
        task = asyncio.current_task()
        assert task is not None
        return pb.ListAgentsResponse(agents=[pb.Agent(id=task.get_name())])

    async def GetLoads(  # noqa: N802
        self, request: pb.GetLoadsRequest, context: AioContext
    ) -> pb.GetLoadsResponse:
        await context.abort(grpc.StatusCode.NOT_FOUND, "nope", METADATA)

    async def GetStatistics(  # noqa: N802
        self, request: pb.GetStatisticsRequest, context: AioContext
    ) -> pb.GetStatisticsResponse:
        raise RuntimeError("boom")

    async def WatchLoads(  # noqa: N802
        self, request: pb.WatchLoadsRequest, context: AioContext
    ) -> AsyncIterator[pb.WatchLoadsResponse]:
        try:
            for n in range(request.min_interval_ms):
                yield pb.WatchLoadsResponse(timestamp_ms=n)
            if request.agent_ids:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "gone", METADATA)
            await self.never.wait()  # until cancelled
        finally:
            self.stream_closed = True


class Rig(NamedTuple):
    """A Toy servicer, its adapter, and the grpc_testing server in front of them."""

    servicer: Toy
    adapter: AioServicerAdapter
    server: grpc_testing.Server


@pytest.fixture
def toy() -> Iterator[Rig]:
    """A Toy servicer behind the adapter and grpc_testing, on its own loop thread."""
    loop = LoopThread()

    async def build() -> Toy:
        return Toy()  # type: ignore[abstract]  # implements only the RPCs the tests call

    try:
        servicer = loop.run(build())
        adapter = AioServicerAdapter(servicer, loop, SERVICE)
        server = grpc_testing.server_from_dictionary(
            {SERVICE: adapter}, grpc_testing.strict_real_time()
        )
        yield Rig(servicer, adapter, server)
        assert adapter.wait_idle()
    finally:
        loop.close()


def _method(name: str) -> object:
    return SERVICE.methods_by_name[name]


def test_unary_coroutine_runs_on_the_loop_and_returns_its_response(toy: Rig) -> None:
    """A unary handler runs the coroutine as a task on the loop and returns its response with OK."""
    _, _, server = toy

    rpc = server.invoke_unary_unary(_method("ListAgents"), {}, pb.ListAgentsRequest(), None)
    response, _, code, details = rpc.termination()

    assert (code, details) == (grpc.StatusCode.OK, "")
    assert response.agents[0].id.startswith("Task-")


def test_abort_keeps_code_details_and_trailing_metadata(toy: Rig) -> None:
    """An aborted unary RPC ends with the given code, details and trailing metadata, no response."""
    _, _, server = toy

    rpc = server.invoke_unary_unary(_method("GetLoads"), {}, pb.GetLoadsRequest(), None)
    response, trailing_metadata, code, details = rpc.termination()

    assert (response, code, details) == (None, grpc.StatusCode.NOT_FOUND, "nope")
    assert set(METADATA) <= set(trailing_metadata)


def test_unexpected_exception_ends_with_unknown(toy: Rig) -> None:
    """An exception other than abort surfaces as UNKNOWN, as a real server reports it."""
    _, _, server = toy

    rpc = server.invoke_unary_unary(_method("GetStatistics"), {}, pb.GetStatisticsRequest(), None)
    _, _, code, details = rpc.termination()

    assert (code, details) == (grpc.StatusCode.UNKNOWN, "Exception calling application: boom")


def test_stream_items_arrive_in_order_and_cancel_closes_the_generator(toy: Rig) -> None:
    """Stream items arrive one by one, and a client cancel closes the async generator."""
    servicer, adapter, server = toy
    request = pb.WatchLoadsRequest(min_interval_ms=3)

    rpc = server.invoke_unary_stream(_method("WatchLoads"), {}, request, None)
    stamps = [rpc.take_response().timestamp_ms for _ in range(3)]
    rpc.cancel()

    assert stamps == [0, 1, 2]
    assert adapter.wait_idle()
    assert servicer.stream_closed


def test_stream_abort_ends_with_status_after_earlier_items(toy: Rig) -> None:
    """A stream that aborts after an item ends with the abort's code, details and metadata."""
    servicer, _, server = toy
    request = pb.WatchLoadsRequest(min_interval_ms=1, agent_ids=["x"])

    rpc = server.invoke_unary_stream(_method("WatchLoads"), {}, request, None)
    first = rpc.take_response()
    trailing_metadata, code, details = rpc.termination()

    assert first.timestamp_ms == 0
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, "gone")
    assert set(METADATA) <= set(trailing_metadata)
    assert servicer.stream_closed


def test_client_streaming_methods_are_refused() -> None:
    """Building the adapter for a service with a client-streaming RPC fails loudly."""

    class Method:
        name = "Upload"
        full_name = "x.Upload"
        client_streaming = True
        server_streaming = False

    class Service:
        methods = (Method(),)

    loop = LoopThread()
    try:
        with pytest.raises(NotImplementedError, match="client streaming"):
            AioServicerAdapter(object(), loop, Service())  # type: ignore[arg-type]  # stand-ins, refused before use
    finally:
        loop.close()

"""Test doubles: a scripted lb.v1 server, interceptors that record calls, a fake clock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from tests.client.serving import HANG_GUARD_S

#: What GetStatistics answers once its scripted failures are used up.
STATISTICS = pb.GetStatisticsResponse(
    strategy=pb.STRATEGY_WEIGHTED, total_selections=3, selections_by_agent={"a": 3}
)


class ScriptedServicer(pb_grpc.LoadBalancerServicer):
    """Fails GetStatistics with ``failures`` codes first; blocks ListAgents; holds WatchLoads.

    It counts every call, so tests can tell exactly how many attempts a client made.
    """

    def __init__(self) -> None:
        self.failures: list[grpc.StatusCode] = []
        #: Attached to the scripted failures as a google.rpc.ErrorInfo detail when set.
        self.info: error_details_pb2.ErrorInfo | None = None
        #: Sent as grpc-status-details-bin as is, for details that are not what they claim.
        self.raw_details: bytes | None = None
        self.calls = 0
        self.release = threading.Event()
        self.watch_ended = threading.Event()

    def GetStatistics(  # noqa: N802 - the proto fixes the name
        self, request: pb.GetStatisticsRequest, context: grpc.ServicerContext
    ) -> pb.GetStatisticsResponse:
        self.calls += 1
        if self.failures:
            code = self.failures.pop(0)
            if self.raw_details is not None:
                context.set_trailing_metadata((("grpc-status-details-bin", self.raw_details),))
            if self.info is not None:
                context.abort_with_status(rpc_status.to_status(_status(code, self.info)))
            context.abort(code, f"scripted {code.name}")
        return STATISTICS

    def ListAgents(  # noqa: N802
        self, request: pb.ListAgentsRequest, context: grpc.ServicerContext
    ) -> pb.ListAgentsResponse:
        self.calls += 1
        self.release.wait(HANG_GUARD_S)  # outlives any short client deadline
        return pb.ListAgentsResponse()

    def WatchLoads(  # noqa: N802
        self, request: pb.WatchLoadsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchLoadsResponse]:
        context.add_callback(self.watch_ended.set)
        yield pb.WatchLoadsResponse(
            loads=[pb.AgentLoad(agent_id="a", active_connections=2)], timestamp_ms=7
        )
        self.watch_ended.wait(HANG_GUARD_S)  # until the client cancels


def _status(code: grpc.StatusCode, info: error_details_pb2.ErrorInfo) -> status_pb2.Status:
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=f"scripted {code.name}")
    status.details.add().Pack(info)
    return status


@dataclass
class ScriptedServer:
    """A running ScriptedServicer on a free loopback port."""

    servicer: ScriptedServicer
    target: str


@dataclass
class Ticker:
    """A fake monotonic clock that only moves when slept on; records every sleep."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass(frozen=True)
class Seen:
    """One call as an interceptor saw it."""

    method: str
    timeout: float | None
    metadata: tuple[tuple[str, str], ...]


def _seen(details: Any) -> Seen:
    return Seen(details.method, details.timeout, tuple(details.metadata or ()))


class Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]  # grpc is untyped: its base is Any
    """A sync client interceptor that records each call's method, timeout and metadata."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.seen.append(_seen(details))
        return continuation(details, request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.seen.append(_seen(details))
        return continuation(details, request)


class AsyncRecorder(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]  # grpc is untyped: its base is Any
    """The asyncio twin of Recorder, for unary calls (grpc.aio takes one kind per object)."""

    def __init__(self, seen: list[Seen] | None = None) -> None:
        self.seen: list[Seen] = [] if seen is None else seen

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.seen.append(_seen(details))
        return await continuation(details, request)


class AsyncStreamRecorder(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]  # grpc is untyped: its base is Any
    """The asyncio twin of Recorder for server streams, appending to a shared list."""

    def __init__(self, seen: list[Seen]) -> None:
        self.seen = seen

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        self.seen.append(_seen(details))
        return await continuation(details, request)


def start_scripted() -> tuple[grpc.Server, ScriptedServer]:
    """Start a ScriptedServicer on a free loopback port."""
    servicer = ScriptedServicer()  # type: ignore[abstract]  # the RPCs it does not script are UNIMPLEMENTED
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LoadBalancerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, ScriptedServer(servicer, f"127.0.0.1:{port}")

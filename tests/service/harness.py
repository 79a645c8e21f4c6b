"""The servicer under grpc_testing: invoking RPCs and decoding their rich error status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
import grpc_testing
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from lb.v1 import load_balancer_pb2 as pb

from lb_service.balancer import LoadBalancer
from lb_service.service.servicer import LoadBalancerServicer
from tests.factories import FakeClock
from tests.service.aio_adapter import HANG_GUARD_S, AioServicerAdapter, LoopThread

#: The lb.v1.LoadBalancer service descriptor, as grpc_testing needs it.
SERVICE = pb.DESCRIPTOR.services_by_name["LoadBalancer"]

#: The ErrorInfo domain the service attaches to every error.
DOMAIN = "lb.v1"


class Termination(NamedTuple):
    """How a unary RPC ended, as ``grpc_testing``'s ``termination()`` reports it."""

    response: Any
    trailing_metadata: tuple[tuple[str, Any], ...]
    code: grpc.StatusCode
    details: str


@dataclass
class Harness:
    """A LoadBalancerServicer served by ``grpc_testing`` through the aio adapter."""

    server: grpc_testing.Server
    loop: LoopThread
    clock: FakeClock
    balancer: LoadBalancer
    servicer: LoadBalancerServicer
    adapter: AioServicerAdapter

    def unary(self, method: str, request: Message) -> Termination:
        """Invoke a unary RPC and wait for it to end."""
        rpc = self.server.invoke_unary_unary(SERVICE.methods_by_name[method], {}, request, None)
        return Termination(*rpc.termination())

    def ok(self, method: str, request: Message) -> Any:
        """Invoke a unary RPC that must succeed and return its response."""
        result = self.unary(method, request)
        assert result.code is grpc.StatusCode.OK, (result.code, result.details)
        return result.response

    def watch(self, request: pb.WatchLoadsRequest) -> grpc_testing.UnaryStreamServerRpc:
        """Start WatchLoads; the deadline is only a guard against a hung test."""
        return self.server.invoke_unary_stream(
            SERVICE.methods_by_name["WatchLoads"], {}, request, HANG_GUARD_S
        )

    def register(self, *agents: pb.Agent) -> None:
        """Register each agent, in order."""
        for agent in agents:
            self.ok("RegisterAgent", pb.RegisterAgentRequest(agent=agent))

    def agents(self) -> list[pb.Agent]:
        """ListAgents."""
        return list(self.ok("ListAgents", pb.ListAgentsRequest()).agents)

    def loads(self, *agent_ids: str) -> list[pb.AgentLoad]:
        """GetLoads of the given ids (all registered agents when none are given)."""
        return list(self.ok("GetLoads", pb.GetLoadsRequest(agent_ids=agent_ids)).loads)

    def statistics(self) -> pb.GetStatisticsResponse:
        """GetStatistics."""
        response: pb.GetStatisticsResponse = self.ok("GetStatistics", pb.GetStatisticsRequest())
        return response

    def state(self) -> tuple[list[pb.Agent], list[pb.AgentLoad]]:
        """What a rejected request must leave untouched: the registry and every load."""
        return self.agents(), self.loads()

    def begin_shutdown(self) -> None:
        """Tell the servicer to end its open streams (runs on the servicer's loop)."""
        self.loop.call(self.servicer.begin_shutdown)


class _Call:
    """The three accessors ``rpc_status.from_call`` reads, over a termination."""

    def __init__(self, trailing_metadata: Any, code: grpc.StatusCode, details: str) -> None:
        self._trailing_metadata = trailing_metadata
        self._code = code
        self._details = details

    def trailing_metadata(self) -> Any:
        return self._trailing_metadata

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def rich_status(trailing_metadata: Any, code: grpc.StatusCode, details: str) -> status_pb2.Status:
    """Decode the google.rpc.Status in ``grpc-status-details-bin``; fails if it is missing.

    ``rpc_status.from_call`` also checks that its code and message equal the RPC's own.
    """
    status = rpc_status.from_call(_Call(trailing_metadata, code, details))
    assert status is not None, f"no grpc-status-details-bin in {trailing_metadata!r}"
    return status


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a rich status: the first, followed at most by a BadRequest."""
    assert 1 <= len(status.details) <= 2, status
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info), status.details[0].type_url
    if len(status.details) == 2:
        assert status.details[1].Is(error_details_pb2.BadRequest.DESCRIPTOR), status
    return info


def bad_request(status: status_pb2.Status) -> error_details_pb2.BadRequest | None:
    """The google.rpc.BadRequest detail of a rich status, if it has one."""
    for detail in status.details:
        found = error_details_pb2.BadRequest()
        if detail.Unpack(found):
            return found
    return None


def assert_rejected(
    trailing_metadata: Any,
    code: grpc.StatusCode,
    details: str,
    *,
    expected_code: grpc.StatusCode,
    expected_details: str,
    reason: str,
) -> None:
    """Assert an RPC ended with the code, the human message and the lb.v1 ErrorInfo reason."""
    assert (code, details) == (expected_code, expected_details)
    info = error_info(rich_status(trailing_metadata, code, details))
    assert (info.domain, info.reason) == (DOMAIN, reason)

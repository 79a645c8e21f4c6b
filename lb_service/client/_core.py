"""The core both clients share: every request, every result, retry timing and lease data.

Like httpx's ``BaseClient``, everything that does not depend on how a call is sent
lives here once. A public client method asks this module for a ``Call`` (which RPC,
the request built from the method's arguments, and how to read the answer into a
domain value) and sends it: ``LoadBalancerClient`` with a blocking stub call,
``AsyncLoadBalancerClient`` with an awaited one. Neither client builds a message or
reads a response itself, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.client import _wire
from lb_service.client._channel import HEALTH_SERVICE, check_timeout, connection
from lb_service.client._errors import ClientError
from lb_service.client._lease import Lease
from lb_service.client._retry import RetryPolicy
from lb_service.model import (
    Agent,
    AgentLoad,
    Compute,
    LoadReport,
    LoadSnapshot,
    Selection,
    SelectionRequest,
    Statistics,
    StrategyName,
    Task,
)

_Result = TypeVar("_Result")

#: The full names of the two services a client calls, which pick the stub a Call uses.
LOAD_BALANCER = pb.DESCRIPTOR.services_by_name["LoadBalancer"].full_name
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name

#: Status codes by number, to read the code of a failed SelectAgents entry.
_CODES = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True, slots=True)
class Call(Generic[_Result]):
    """One RPC as both clients make it: the service and method, the request, the reader.

    ``read`` turns one response message (for a stream: one message of it) into the
    domain value the public method returns.
    """

    service: str
    rpc: str
    request: Message
    read: Callable[[Any], _Result]


def stubs(channel: grpc.Channel | grpc.aio.Channel) -> dict[str, Any]:
    """The stubs a Call's ``service`` names, over one channel (blocking or asyncio)."""
    return {
        LOAD_BALANCER: pb_grpc.LoadBalancerStub(channel),
        HEALTH: health_pb2_grpc.HealthStub(channel),
    }


def _nothing(_response: object) -> None:
    """Read a response that carries nothing the caller needs."""


def register(agent: Agent) -> Call[None]:
    """RegisterAgent for ``agent``."""
    request = pb.RegisterAgentRequest(agent=_wire.agent_to_pb(agent))
    return Call(LOAD_BALANCER, "RegisterAgent", request, _nothing)


def deregister(agent_id: str) -> Call[None]:
    """DeregisterAgent for ``agent_id``."""
    request = pb.DeregisterAgentRequest(agent_id=agent_id)
    return Call(LOAD_BALANCER, "DeregisterAgent", request, _nothing)


def _agents(response: pb.ListAgentsResponse) -> list[Agent]:
    return [_wire.agent_from_pb(agent) for agent in response.agents]


def agents() -> Call[list[Agent]]:
    """ListAgents, read into the registered agents."""
    return Call(LOAD_BALANCER, "ListAgents", pb.ListAgentsRequest(), _agents)


def select(
    task: Task | None,
    *,
    model: str,
    min_vram_gb: float,
    compute: Compute,
    session_id: str,
    candidates: Sequence[Agent],
    acquire: bool,
) -> Call[Selection]:
    """SelectAgent for a task, or for its fields given one by one; read into a Selection."""
    if task is None:
        task = Task(model=model, min_vram_gb=min_vram_gb, compute=compute)
    elif (model, min_vram_gb, compute) != ("", 0.0, Compute.ANY):
        raise TypeError("give either task or model/min_vram_gb/compute, not both")
    request = pb.SelectAgentRequest(
        task=_wire.task_to_pb(task),
        session_id=session_id,
        candidates=[_wire.agent_to_pb(agent) for agent in candidates],
        acquire=acquire,
    )
    return Call(LOAD_BALANCER, "SelectAgent", request, _wire.selection_from_pb)


def selection_results(response: pb.SelectAgentsResponse) -> list[Selection | ClientError]:
    """Read a SelectAgents response: a Selection, or the ClientError SelectAgent would raise."""
    outcomes: list[Selection | ClientError] = []
    for result in response.results:
        if result.HasField("selection"):
            outcomes.append(_wire.selection_from_pb(result.selection))
        else:
            error = result.error
            code = _CODES.get(error.code, grpc.StatusCode.UNKNOWN)
            outcomes.append(ClientError(code, error.message, error.reason))
    return outcomes


def select_many(requests: Sequence[SelectionRequest]) -> Call[list[Selection | ClientError]]:
    """SelectAgents with one entry per pick, in order; read per pick."""
    request = pb.SelectAgentsRequest(requests=[_wire.selection_request_to_pb(r) for r in requests])
    return Call(LOAD_BALANCER, "SelectAgents", request, selection_results)


def _request_id(response: pb.RecordRequestStartResponse) -> str:
    return response.request_id


def start(agent_id: str, model: str = "") -> Call[str]:
    """RecordRequestStart on ``agent_id`` for ``model`` ("" = not told), read into the lease id."""
    request = pb.RecordRequestStartRequest(agent_id=agent_id, model=model)
    return Call(LOAD_BALANCER, "RecordRequestStart", request, _request_id)


def end(request_id: str, *, latency_ms: float, agent_id: str, failed: bool) -> Call[None]:
    """RecordRequestEnd, by lease id or (without one) the agent's oldest lease."""
    request = pb.RecordRequestEndRequest(
        agent_id=agent_id, latency_ms=latency_ms, request_id=request_id, failed=failed
    )
    return Call(LOAD_BALANCER, "RecordRequestEnd", request, _nothing)


def _loads(response: pb.GetLoadsResponse) -> list[AgentLoad]:
    return [_wire.load_from_pb(load) for load in response.loads]


def loads(agent_ids: Sequence[str]) -> Call[list[AgentLoad]]:
    """GetLoads of ``agent_ids`` (none: every agent), read into AgentLoads."""
    return Call(LOAD_BALANCER, "GetLoads", pb.GetLoadsRequest(agent_ids=agent_ids), _loads)


def statistics() -> Call[Statistics]:
    """GetStatistics, read into Statistics."""
    request = pb.GetStatisticsRequest()
    return Call(LOAD_BALANCER, "GetStatistics", request, _wire.statistics_from_pb)


def watch(agent_ids: Sequence[str], *, min_interval_ms: int) -> Call[LoadSnapshot]:
    """WatchLoads (a server stream), each message read into a LoadSnapshot."""
    request = pb.WatchLoadsRequest(agent_ids=agent_ids, min_interval_ms=min_interval_ms)
    return Call(LOAD_BALANCER, "WatchLoads", request, _wire.snapshot_from_pb)


def stream_timeout(timeout: float | None) -> float | None:
    """A stream's deadline: none unless ``timeout`` gives one, which must be usable."""
    return None if timeout is None else check_timeout(timeout)


def _serving_status(response: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def health() -> Call[str]:
    """grpc.health.v1 Check for lb.v1.LoadBalancer, read into the status name."""
    request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)
    return Call(HEALTH, "Check", request, _serving_status)


def _weights(response: pb.UpdateWeightsResponse) -> dict[str, float]:
    return dict(response.weights)


def update_weights(weights: Mapping[str, float]) -> Call[dict[str, float]]:
    """UpdateWeights, read into every agent's effective weight."""
    return Call(LOAD_BALANCER, "UpdateWeights", pb.UpdateWeightsRequest(weights=weights), _weights)


def _previous_strategy(response: pb.SetStrategyResponse) -> StrategyName:
    return _wire.strategy_from_pb(response.previous)


def set_strategy(strategy: StrategyName) -> Call[StrategyName]:
    """SetStrategy, read into the strategy it replaced."""
    request = pb.SetStrategyRequest(strategy=_wire.strategy_to_pb(strategy))
    return Call(LOAD_BALANCER, "SetStrategy", request, _previous_strategy)


def heartbeat(agent_id: str, report: LoadReport | None = None) -> Call[None]:
    """Heartbeat: the agent is alive, and with ``report`` how loaded it is."""
    request = pb.HeartbeatRequest(
        agent_id=agent_id, report=None if report is None else _wire.report_to_pb(report)
    )
    return Call(LOAD_BALANCER, "Heartbeat", request, _nothing)


def _active(response: pb.DrainAgentResponse) -> int:
    return int(response.active_connections)


def drain(agent_id: str, *, undrain: bool) -> Call[int]:
    """DrainAgent (or its undo), read into the agent's open leases."""
    request = pb.DrainAgentRequest(agent_id=agent_id, undrain=undrain)
    return Call(LOAD_BALANCER, "DrainAgent", request, _active)


def note_unended(error: BaseException, lease: Lease, end_error: ClientError) -> None:
    """Tell, on the block's own exception, that its lease could not be ended."""
    # The block's own exception is what the caller must see; the lease will expire on
    # the server and count as failed anyway.
    error.add_note(f"lb-service: ending lease {lease.request_id} failed: {end_error}")


class ClientCore:
    """What both clients hold apart from their channel: connection, deadline, retry, clock.

    The subclasses open the channel and send; this class decides the deadline of a
    call, whether and how long to wait before trying it again, and lease latency.
    """

    #: The name ``repr`` shows, the public class's own.
    _NAME: ClassVar[str]
    #: The stubs over the subclass's channel, by service name (see ``stubs``).
    _stubs: dict[str, Any]

    def __init__(
        self,
        target: str,
        *,
        root_certificates: bytes | None,
        certificate_chain: bytes | None,
        private_key: bytes | None,
        tls: bool,
        token: str | None,
        timeout: float,
        retry: RetryPolicy | None,
        clock: Callable[[], float],
        random: Callable[[], float],
    ) -> None:
        """Check the connection options, the default deadline and the retry policy."""
        self._connection = connection(
            target,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            tls=tls,
            token=token,
        )
        self._timeout = check_timeout(timeout)
        self._retry = retry or RetryPolicy()
        self._clock, self._random = clock, random

    def __repr__(self) -> str:
        secure = "tls" if self._connection.credentials is not None else "plaintext"
        return f"{self._NAME}({self._connection.target!r}, {secure})"

    def _method(self, call: Call[Any]) -> Any:
        """The stub method that sends ``call``, on the subclass's channel."""
        return getattr(self._stubs[call.service], call.rpc)

    def _deadline(self, timeout: float | None) -> float:
        """The clock reading by which a unary call, retries included, must be done."""
        budget = self._timeout if timeout is None else check_timeout(timeout)
        return self._clock() + budget

    def _retry_wait(self, failed: int, rpc_error: grpc.RpcError, deadline: float) -> float:
        """Seconds to wait after ``failed`` attempts; raises the ClientError when giving up."""
        error = ClientError.from_rpc_error(rpc_error)
        wait = self._retry.delay(failed, error, deadline - self._clock(), self._random)
        if wait is None:
            raise error from rpc_error
        return wait

    def _elapsed_ms(self, started: float) -> float:
        """Milliseconds since the clock read ``started``: a lease's latency."""
        return (self._clock() - started) * 1000

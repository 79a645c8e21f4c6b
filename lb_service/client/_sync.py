"""LoadBalancerClient: the blocking client, for threads and scripts."""

from __future__ import annotations

import contextlib
import random as _random
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.client import _core, _wire
from lb_service.client._channel import (
    CHANNEL_OPTIONS,
    DEFAULT_TARGET,
    DEFAULT_TIMEOUT_S,
    HEALTH_SERVICE,
    check_timeout,
    connection,
)
from lb_service.client._errors import ClientError
from lb_service.client._lease import Lease
from lb_service.client._retry import RetryPolicy
from lb_service.model import (
    Agent,
    AgentLoad,
    Compute,
    LoadSnapshot,
    Selection,
    SelectionRequest,
    Statistics,
    StrategyName,
    Task,
)

_Response = TypeVar("_Response")


class LoadBalancerClient:
    """A blocking lb.v1 client that speaks in domain values; safe to share between threads.

    Every unary call has a deadline (``timeout`` seconds, 5 by default, retries
    included) and is retried per ``retry`` when it could not reach lb-service (see
    RetryPolicy). Every failed call raises ClientError. ``clock`` (monotonic seconds,
    for deadlines and lease latency), ``sleep`` and ``random`` exist so tests are exact.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        tls: bool = False,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        interceptors: Sequence[Any] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        """Open a channel to ``target``; nothing connects until the first call.

        ``target`` is HOST:PORT, or several replicas sharing a Redis store as
        ``ipv4:HOST:PORT,HOST:PORT,...`` (or a DNS name with several records): calls
        are spread over them round robin.

        Any of the PEM ``root_certificates``, ``certificate_chain``, ``private_key``
        means TLS (chain and key together: mutual TLS); ``tls=True`` alone means TLS
        with the system's roots. ``token`` is sent as ``authorization: Bearer <token>``
        on every call. ``interceptors`` are grpc client interceptors, outermost first.
        """
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
        self._clock, self._sleep, self._random = clock, sleep, random
        credentials = self._connection.credentials
        channel = (
            grpc.insecure_channel(target, CHANNEL_OPTIONS)
            if credentials is None
            else grpc.secure_channel(target, credentials, CHANNEL_OPTIONS)
        )
        self._channel = grpc.intercept_channel(channel, *interceptors) if interceptors else channel
        self._stub = pb_grpc.LoadBalancerStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __repr__(self) -> str:
        secure = "tls" if self._connection.credentials is not None else "plaintext"
        return f"LoadBalancerClient({self._connection.target!r}, {secure})"

    def __enter__(self) -> LoadBalancerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; open watches end and later calls fail."""
        self._channel.close()

    def register(self, agent: Agent, *, timeout: float | None = None) -> None:
        """Add an agent, or replace the one with its id."""
        request = pb.RegisterAgentRequest(agent=_wire.agent_to_pb(agent))
        self._call(self._stub.RegisterAgent, request, timeout)

    def deregister(self, agent_id: str, *, timeout: float | None = None) -> None:
        """Remove an agent; NOT_FOUND if it is not registered."""
        request = pb.DeregisterAgentRequest(agent_id=agent_id)
        self._call(self._stub.DeregisterAgent, request, timeout)

    def agents(self, *, timeout: float | None = None) -> list[Agent]:
        """The registered agents, in registration order."""
        response: pb.ListAgentsResponse = self._call(
            self._stub.ListAgents, pb.ListAgentsRequest(), timeout
        )
        return [_wire.agent_from_pb(agent) for agent in response.agents]

    def select(
        self,
        task: Task | None = None,
        *,
        model: str = "",
        min_vram_gb: float = 0.0,
        compute: Compute = Compute.ANY,
        session_id: str = "",
        candidates: Sequence[Agent] = (),
        acquire: bool = False,
        timeout: float | None = None,
    ) -> Selection:
        """Pick an agent for a task (or for ``model``/``min_vram_gb``/``compute``).

        With ``acquire=True`` the pick also opens a lease, whose id is in
        ``request_id``; prefer the ``acquire`` context manager, which ends it.
        """
        request = _core.select_request(
            task,
            model=model,
            min_vram_gb=min_vram_gb,
            compute=compute,
            session_id=session_id,
            candidates=candidates,
            acquire=acquire,
        )
        return _wire.selection_from_pb(self._call(self._stub.SelectAgent, request, timeout))

    def select_many(
        self, requests: Sequence[SelectionRequest], *, timeout: float | None = None
    ) -> list[Selection | ClientError]:
        """Make several picks in one call (SelectAgents), in order.

        Each pick succeeds or fails on its own: the list holds, per request, the
        Selection or the ClientError that ``select`` would have raised for it. The
        call itself raises ClientError only when it fails as a whole (e.g. more than
        1000 requests, or no server). A pick with ``acquire`` holds its lease whatever
        happens to the others; end it as usual.
        """
        response: pb.SelectAgentsResponse = self._call(
            self._stub.SelectAgents, _core.select_many_request(requests), timeout
        )
        return _core.selection_results(response)

    @contextlib.contextmanager
    def acquire(
        self,
        task: Task | None = None,
        *,
        model: str = "",
        min_vram_gb: float = 0.0,
        compute: Compute = Compute.ANY,
        session_id: str = "",
        candidates: Sequence[Agent] = (),
        timeout: float | None = None,
    ) -> Iterator[Lease]:
        """Pick an agent and hold a lease on it for the ``with`` block.

        On exit the end is recorded with the block's duration as latency, failed when
        the block raised (the exception still propagates) or called ``mark_failed``.
        """
        selection = self.select(
            task,
            model=model,
            min_vram_gb=min_vram_gb,
            compute=compute,
            session_id=session_id,
            candidates=candidates,
            acquire=True,
            timeout=timeout,
        )
        lease = Lease(selection)
        started = self._clock()
        try:
            yield lease
        except BaseException as error:
            try:
                self.end(lease.request_id, latency_ms=self._elapsed_ms(started), failed=True)
            except ClientError as end_error:
                # The block's own exception is what the caller must see; the lease
                # will expire on the server and count as failed anyway.
                error.add_note(f"lb-service: ending lease {lease.request_id} failed: {end_error}")
            raise
        self.end(lease.request_id, latency_ms=self._elapsed_ms(started), failed=lease.failed)

    def start(self, agent_id: str, *, timeout: float | None = None) -> str:
        """Record that a request went to ``agent_id``; return its lease id."""
        request = pb.RecordRequestStartRequest(agent_id=agent_id)
        response: pb.RecordRequestStartResponse = self._call(
            self._stub.RecordRequestStart, request, timeout
        )
        return response.request_id

    def end(
        self,
        request_id: str = "",
        *,
        latency_ms: float,
        agent_id: str = "",
        failed: bool = False,
        timeout: float | None = None,
    ) -> None:
        """Record that a request finished; by ``request_id`` this is idempotent.

        Without ``request_id``, the agent's oldest open lease is closed.
        """
        request = pb.RecordRequestEndRequest(
            agent_id=agent_id, latency_ms=latency_ms, request_id=request_id, failed=failed
        )
        self._call(self._stub.RecordRequestEnd, request, timeout)

    def loads(
        self, agent_ids: Sequence[str] = (), *, timeout: float | None = None
    ) -> list[AgentLoad]:
        """The loads of ``agent_ids`` in that order, or of every registered agent."""
        request = pb.GetLoadsRequest(agent_ids=agent_ids)
        response: pb.GetLoadsResponse = self._call(self._stub.GetLoads, request, timeout)
        return [_wire.load_from_pb(load) for load in response.loads]

    def statistics(self, *, timeout: float | None = None) -> Statistics:
        """Service-wide counters and the current strategy."""
        response = self._call(self._stub.GetStatistics, pb.GetStatisticsRequest(), timeout)
        return _wire.statistics_from_pb(response)

    def watch(
        self,
        agent_ids: Sequence[str] = (),
        *,
        min_interval_ms: int = 0,
        timeout: float | None = None,
    ) -> Generator[LoadSnapshot, None, None]:
        """Stream load snapshots: the current one at once, then one per change.

        The stream is not retried and has no deadline unless ``timeout`` (seconds) gives
        one, after which iterating raises ClientError DEADLINE_EXCEEDED; ``close()`` on
        the returned generator cancels it (``with contextlib.closing(client.watch())``).
        Errors (e.g. NOT_FOUND for an unknown id) are raised as ClientError when
        iterating; every snapshot is complete, so watching again after one loses nothing.
        """
        request = pb.WatchLoadsRequest(agent_ids=agent_ids, min_interval_ms=min_interval_ms)
        return self._stream(request, None if timeout is None else check_timeout(timeout))

    def health(self, *, timeout: float | None = None) -> str:
        """The server's grpc.health.v1 status for lb.v1.LoadBalancer, e.g. ``"SERVING"``."""
        request = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)
        response: health_pb2.HealthCheckResponse = self._call(self._health.Check, request, timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def update_weights(
        self, weights: Mapping[str, float], *, timeout: float | None = None
    ) -> dict[str, float]:
        """Override weights, all or nothing; return every agent's effective weight."""
        request = pb.UpdateWeightsRequest(weights=weights)
        response: pb.UpdateWeightsResponse = self._call(self._stub.UpdateWeights, request, timeout)
        return dict(response.weights)

    def set_strategy(self, strategy: StrategyName, *, timeout: float | None = None) -> StrategyName:
        """Switch the selection strategy; return the one it replaced."""
        request = pb.SetStrategyRequest(strategy=_wire.strategy_to_pb(strategy))
        response: pb.SetStrategyResponse = self._call(self._stub.SetStrategy, request, timeout)
        return _wire.strategy_from_pb(response.previous)

    def _call(
        self, method: Callable[..., _Response], request: object, timeout: float | None
    ) -> _Response:
        budget = self._timeout if timeout is None else check_timeout(timeout)
        deadline = self._clock() + budget
        failed = 0
        while True:
            try:
                return method(
                    request,
                    timeout=deadline - self._clock(),
                    metadata=self._connection.metadata,
                )
            except grpc.RpcError as rpc_error:
                error = ClientError.from_rpc_error(rpc_error)
                failed += 1
                wait = self._retry.delay(failed, error, deadline - self._clock(), self._random)
                if wait is None:
                    raise error from rpc_error
            self._sleep(wait)

    def _stream(
        self, request: pb.WatchLoadsRequest, timeout: float | None
    ) -> Generator[LoadSnapshot, None, None]:
        call = self._stub.WatchLoads(request, timeout=timeout, metadata=self._connection.metadata)
        try:
            for message in call:
                yield _wire.snapshot_from_pb(message)
        except grpc.RpcError as rpc_error:
            raise ClientError.from_rpc_error(rpc_error) from rpc_error
        finally:
            call.cancel()

    def _elapsed_ms(self, started: float) -> float:
        return (self._clock() - started) * 1000

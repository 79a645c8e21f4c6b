"""AsyncLoadBalancerClient: the asyncio client, for dispatchers built on an event loop.

Everything but sending lives in ``_core``; this module awaits the calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import random as _random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from lb_service.client import _core
from lb_service.client._channel import CHANNEL_OPTIONS, DEFAULT_TARGET, DEFAULT_TIMEOUT_S
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


class AsyncLoadBalancerClient(_core.ClientCore):
    """An asyncio lb.v1 client that speaks in domain values; create it inside the event loop.

    Every unary call has a deadline (``timeout`` seconds, 5 by default, retries
    included) and is retried per ``retry`` when it could not reach lb-service (see
    RetryPolicy). Every failed call raises ClientError. ``clock`` (monotonic seconds,
    for deadlines and lease latency), ``sleep`` and ``random`` exist so tests are exact.
    """

    _NAME = "AsyncLoadBalancerClient"

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
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
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
        super().__init__(
            target,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            tls=tls,
            token=token,
            timeout=timeout,
            retry=retry,
            clock=clock,
            random=random,
        )
        self._sleep = sleep
        credentials = self._connection.credentials
        channel = (
            grpc.aio.insecure_channel(target, CHANNEL_OPTIONS, interceptors=interceptors or None)
            if credentials is None
            else grpc.aio.secure_channel(
                target, credentials, CHANNEL_OPTIONS, interceptors=interceptors or None
            )
        )
        self._channel = channel
        self._stubs = _core.stubs(channel)

    async def __aenter__(self) -> AsyncLoadBalancerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; open watches end and later calls fail."""
        await self._channel.close()

    async def register(self, agent: Agent, *, timeout: float | None = None) -> None:
        """Add an agent, or replace the one with its id."""
        await self._send(_core.register(agent), timeout)

    async def deregister(self, agent_id: str, *, timeout: float | None = None) -> None:
        """Remove an agent; NOT_FOUND if it is not registered."""
        await self._send(_core.deregister(agent_id), timeout)

    async def agents(self, *, timeout: float | None = None) -> list[Agent]:
        """The registered agents, in registration order."""
        return await self._send(_core.agents(), timeout)

    async def select(
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
        call = _core.select(
            task,
            model=model,
            min_vram_gb=min_vram_gb,
            compute=compute,
            session_id=session_id,
            candidates=candidates,
            acquire=acquire,
        )
        return await self._send(call, timeout)

    async def select_many(
        self, requests: Sequence[SelectionRequest], *, timeout: float | None = None
    ) -> list[Selection | ClientError]:
        """Make several picks in one call (SelectAgents), in order.

        Each pick succeeds or fails on its own: the list holds, per request, the
        Selection or the ClientError that ``select`` would have raised for it. The
        call itself raises ClientError only when it fails as a whole (e.g. more than
        1000 requests, or no server). A pick with ``acquire`` holds its lease whatever
        happens to the others; end it as usual.
        """
        return await self._send(_core.select_many(requests), timeout)

    @contextlib.asynccontextmanager
    async def acquire(
        self,
        task: Task | None = None,
        *,
        model: str = "",
        min_vram_gb: float = 0.0,
        compute: Compute = Compute.ANY,
        session_id: str = "",
        candidates: Sequence[Agent] = (),
        timeout: float | None = None,
    ) -> AsyncIterator[Lease]:
        """Pick an agent and hold a lease on it for the ``async with`` block.

        On exit the end is recorded with the block's duration as latency, failed when
        the block raised (the exception still propagates) or called ``mark_failed``.
        """
        selection = await self.select(
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
                await self.end(lease.request_id, latency_ms=self._elapsed_ms(started), failed=True)
            except ClientError as end_error:
                _core.note_unended(error, lease, end_error)
            raise
        await self.end(lease.request_id, latency_ms=self._elapsed_ms(started), failed=lease.failed)

    async def start(self, agent_id: str, *, model: str = "", timeout: float | None = None) -> str:
        """Record that a request went to ``agent_id``; return its lease id.

        ``model``: the model the request asks for (optional), so the service learns how
        long that model's requests take on the agent.
        """
        return await self._send(_core.start(agent_id, model), timeout)

    async def end(
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
        call = _core.end(request_id, latency_ms=latency_ms, agent_id=agent_id, failed=failed)
        await self._send(call, timeout)

    async def loads(
        self, agent_ids: Sequence[str] = (), *, timeout: float | None = None
    ) -> list[AgentLoad]:
        """The loads of ``agent_ids`` in that order, or of every registered agent."""
        return await self._send(_core.loads(agent_ids), timeout)

    async def statistics(self, *, timeout: float | None = None) -> Statistics:
        """Service-wide counters and the current strategy."""
        return await self._send(_core.statistics(), timeout)

    def watch(
        self,
        agent_ids: Sequence[str] = (),
        *,
        min_interval_ms: int = 0,
        timeout: float | None = None,
    ) -> AsyncGenerator[LoadSnapshot, None]:
        """Stream load snapshots: the current one at once, then one per change.

        The stream is not retried and has no deadline unless ``timeout`` (seconds) gives
        one, after which iterating raises ClientError DEADLINE_EXCEEDED; ``aclose()`` on
        the returned generator cancels it. Errors (e.g. NOT_FOUND for an unknown id) are
        raised as ClientError when iterating; every snapshot is complete, so watching
        again after one loses nothing.
        """
        # Built here, not in the generator, so a bad timeout raises at the call.
        call = _core.watch(agent_ids, min_interval_ms=min_interval_ms)
        return self._stream(call, _core.stream_timeout(timeout))

    async def health(self, *, timeout: float | None = None) -> str:
        """The server's grpc.health.v1 status for lb.v1.LoadBalancer, e.g. ``"SERVING"``."""
        return await self._send(_core.health(), timeout)

    async def update_weights(
        self, weights: Mapping[str, float], *, timeout: float | None = None
    ) -> dict[str, float]:
        """Override weights, all or nothing; return every agent's effective weight."""
        return await self._send(_core.update_weights(weights), timeout)

    async def set_strategy(
        self, strategy: StrategyName, *, timeout: float | None = None
    ) -> StrategyName:
        """Switch the selection strategy; return the one it replaced."""
        return await self._send(_core.set_strategy(strategy), timeout)

    async def heartbeat(
        self, agent_id: str, report: LoadReport | None = None, *, timeout: float | None = None
    ) -> None:
        """Tell the service the agent is alive (it registered with a heartbeat TTL).

        ``report`` is the agent's load now (``LoadReport``: its queue, KV cache, loaded
        models, ...), which decisions read while it is fresh; a figure out of range is
        INVALID_ARGUMENT naming the field. NOT_FOUND means the agent is no longer
        registered (it expired): register again.
        """
        await self._send(_core.heartbeat(agent_id, report), timeout)

    async def drain(
        self, agent_id: str, *, undrain: bool = False, timeout: float | None = None
    ) -> int:
        """Stop new picks of the agent (``undrain``: allow them again); return its open leases."""
        return await self._send(_core.drain(agent_id, undrain=undrain), timeout)

    async def _send(self, call: _core.Call[_Result], timeout: float | None) -> _Result:
        """Make a unary call, retried per the policy within one deadline; read its answer."""
        method = self._method(call)
        deadline = self._deadline(timeout)
        failed = 0
        while True:
            try:
                response = await method(
                    call.request,
                    timeout=deadline - self._clock(),
                    metadata=self._connection.metadata,
                )
            except grpc.RpcError as rpc_error:
                failed += 1
                wait = self._retry_wait(failed, rpc_error, deadline)
            else:
                return call.read(response)
            await self._sleep(wait)

    async def _stream(
        self, call: _core.Call[_Result], timeout: float | None
    ) -> AsyncGenerator[_Result, None]:
        """Iterate a server stream, each message read; cancel it however iteration ends."""
        method = self._method(call)
        stream = method(call.request, timeout=timeout, metadata=self._connection.metadata)
        try:
            async for message in stream:
                yield call.read(message)
        except grpc.RpcError as rpc_error:
            raise ClientError.from_rpc_error(rpc_error) from rpc_error
        finally:
            stream.cancel()

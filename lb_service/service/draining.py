"""Draining before a stop: refuse new calls with UNAVAILABLE while the ones in flight finish.

grpc core cancels calls that have arrived but not yet reached a handler when the server
shuts down, so their clients see CANCELLED, which they do not retry, instead of
UNAVAILABLE, which they do (grpc/grpc#41785). Under load there are always a few such
calls per method. So the server drains first: from ``begin()`` every new lb.v1 call is
answered UNAVAILABLE at once, and ``drained()`` waits until nothing is in flight and no
call has arrived for a moment, so nothing is left waiting when grpc shuts down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from lb_service.service.handlers import HandlerCache, rewrap

#: The calls drained; health checks keep answering (NOT_SERVING) until the very end.
SERVICE_PREFIX = "/lb.v1.LoadBalancer/"
REFUSAL = "the server is shutting down; retry, on another replica if there is one"


class DrainInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts lb.v1 calls in flight and, once draining, refuses new ones with UNAVAILABLE."""

    def __init__(self) -> None:
        """Start serving normally (not draining)."""
        self.draining = False
        self.in_flight = 0
        self._last_arrival = time.monotonic()
        self._cache = HandlerCache()

    def begin(self) -> None:
        """Refuse every lb.v1 call that arrives from now on."""
        self.draining = True

    async def drained(self, quiet_s: float, timeout_s: float) -> bool:
        """Wait until no call is in flight and none arrived for ``quiet_s``; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            now = time.monotonic()
            if self.in_flight == 0 and now - self._last_arrival >= quiet_s:
                return True
            if now >= deadline:
                return False
            await asyncio.sleep(min(0.01, deadline - now))

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Return the handler counted in flight, or one that refuses the call while draining."""
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler
        if not details.method.startswith(SERVICE_PREFIX):
            return handler
        self._last_arrival = time.monotonic()
        return self._cache.get(
            details.method, handler, lambda h: rewrap(h, self._unary, self._stream)
        )

    def _unary(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return counted

    def _stream(
        self, behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def counted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)
            self.in_flight += 1
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                self.in_flight -= 1

        return counted

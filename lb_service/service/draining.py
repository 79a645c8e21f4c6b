"""Draining before a stop: refuse new calls with UNAVAILABLE while the ones in flight finish.

grpc core cancels calls that have arrived but not yet reached a handler when the server
shuts down, so their clients see CANCELLED, which they do not retry, instead of
UNAVAILABLE, which they do (grpc/grpc#41785). Under load there are always a few such
calls per method. So the server drains first: from ``begin()`` every new lb.v1 call is
answered UNAVAILABLE at once, and ``drained()`` waits until nothing is in flight and no
call has arrived for a moment, so nothing is left waiting when grpc shuts down.

``Drain.step`` is the server-stack step that does this; it wraps lb.v1's handlers once,
at registration.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc

from lb_service.service.handlers import Stream, Unary, rewrap

#: The calls drained; health checks keep answering (NOT_SERVING) until the very end.
SERVICE_PREFIX = "/lb.v1.LoadBalancer/"
REFUSAL = "the server is shutting down; retry, on another replica if there is one"


class Drain:
    """Counts lb.v1 calls in flight and, once draining, refuses new ones with UNAVAILABLE."""

    def __init__(self) -> None:
        """Start serving normally (not draining)."""
        self.draining = False
        self.in_flight = 0
        self._last_arrival = time.monotonic()

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

    def step(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The server-stack step: lb.v1's unary-request handlers counted, refused once draining."""
        if handler.request_streaming or not method.startswith(SERVICE_PREFIX):
            return handler
        return rewrap(handler, self._unary, self._stream)

    def _unary(self, behaviour: Unary) -> Unary:
        async def counted(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._last_arrival = time.monotonic()
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)
            self.in_flight += 1
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1

        return counted

    def _stream(self, behaviour: Stream) -> Stream:
        async def counted(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self._last_arrival = time.monotonic()
            if self.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, REFUSAL)
            self.in_flight += 1
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                self.in_flight -= 1

        return counted

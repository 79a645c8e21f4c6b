"""An interceptor that times every RPC, learns its status code, and tags its log lines."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from lb_service.service.handlers import HandlerCache, rewrap

#: Receives (full method name, status code, seconds taken) once per finished RPC.
Recorder = Callable[[str, grpc.StatusCode, float], None]


class ObservingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Wraps each handler to report its method, code and duration, and to bind ``rpc`` to logs.

    Every log line written while an RPC runs carries ``rpc=/lb.v1.LoadBalancer/...``,
    so the servicer's own lines name their RPC without repeating it.
    """

    def __init__(self, record: Recorder) -> None:
        """Report finished RPCs to ``record``."""
        self._record = record
        self._cache = HandlerCache()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Return the handler wrapped so that it is timed and tagged."""
        handler = await continuation(details)
        if handler is None or handler.request_streaming:
            return handler  # no client-streaming RPCs here beyond reflection's
        method = details.method
        return self._cache.get(
            method,
            handler,
            lambda h: rewrap(
                h, lambda b: self._unary(method, b), lambda b: self._stream(method, b)
            ),
        )

    def _unary(
        self, method: str, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            # bind/reset rather than structlog's bound_contextvars, which copies the
            # whole context on entry: that copy was a large share of a short RPC's cost.
            # A unary handler runs in one task, so its tokens reset in the same context.
            tokens = structlog.contextvars.bind_contextvars(rpc=method)
            try:
                response = await behaviour(request, context)
                code = _code(context, grpc.StatusCode.OK)
                return response
            except BaseException:
                code = _code(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                structlog.contextvars.reset_contextvars(**tokens)
                self._record(method, code, time.perf_counter() - started)

        return observed

    def _stream(
        self, method: str, behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]:
        async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            with structlog.contextvars.bound_contextvars(rpc=method):
                try:
                    async for response in behaviour(request, context):
                        yield response
                    code = _code(context, grpc.StatusCode.OK)
                except GeneratorExit:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except BaseException as error:
                    cancelled = type(error).__name__ == "CancelledError"
                    code = grpc.StatusCode.CANCELLED if cancelled else _code(context, code)
                    raise
                finally:
                    self._record(method, code, time.perf_counter() - started)

        return observed


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    # context.code() holds what abort() or set_code() set; None means the handler
    # finished without setting one.
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), default)

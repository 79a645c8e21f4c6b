"""Rewrapping grpc.aio method handlers, shared by the interceptors that decorate RPCs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

#: A unary handler's behaviour, and a server-streaming one's.
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Unary], Unary],
    stream: Callable[[Stream], Stream],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind whose behaviour is ``unary(...)`` or ``stream(...)`` of the old.

    Only unary-request handlers are rewrapped (lb.v1 has no client streaming);
    ``request_deserializer`` replaces the handler's own when given.
    """
    deserializer = request_deserializer or handler.request_deserializer
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            stream(handler.unary_stream),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary(handler.unary_unary),
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


class HandlerCache:
    """Wrapped handlers per method, reused while the handler underneath is the same object.

    A wrapping depends only on the handler, so building it on every call would be pure
    hot-path waste (profiling found several µs per call per interceptor).
    """

    def __init__(self) -> None:
        """Start empty."""
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def get(
        self,
        method: str,
        handler: grpc.RpcMethodHandler,
        build: Callable[[grpc.RpcMethodHandler], grpc.RpcMethodHandler],
    ) -> grpc.RpcMethodHandler:
        """Return the wrapping of ``handler`` for ``method``, building it with ``build`` once."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = build(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

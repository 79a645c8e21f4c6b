"""Decorating grpc.aio method handlers, shared by the steps of the server stack.

Every step (observe, drain, auth, malformed) is a ``Step``: given a method's full name
and its handler, it returns the handler to serve, its behaviour wrapped, or the same
handler where the step does not apply. Steps run once per method, when the server
registers its services (``lb_service.service.stack``), never per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

#: A handler's behaviour with one response (unary or client-streaming), and with a
#: response stream (server-streaming or bidirectional). The request is a message, or
#: an iterator of them when the request streams; the steps pass it on as it is.
Unary = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
Stream = Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]]
#: One step of the server stack: (full method name, handler) -> the handler to serve.
Step = Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]


def rewrap(
    handler: grpc.RpcMethodHandler,
    unary: Callable[[Unary], Unary],
    stream: Callable[[Stream], Stream],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind whose behaviour is ``unary(...)`` or ``stream(...)`` of the old.

    ``unary`` wraps behaviours with one response, ``stream`` those with a response
    stream; ``request_deserializer`` replaces the handler's own when given.
    """
    serializers: dict[str, Any] = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming:
        if handler.response_streaming:
            return grpc.stream_stream_rpc_method_handler(
                stream(handler.stream_stream), **serializers
            )
        return grpc.stream_unary_rpc_method_handler(unary(handler.stream_unary), **serializers)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **serializers)
    return grpc.unary_unary_rpc_method_handler(unary(handler.unary_unary), **serializers)


def apply(
    steps: tuple[Step, ...], method: str, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    """``handler`` behind every step of ``steps``, the first one outermost."""
    for step in reversed(steps):
        handler = step(method, handler)
    return handler

"""Requests whose bytes do not parse: INVALID_ARGUMENT with the reason, before the servicer runs.

Left to itself grpc.aio answers an undecodable request with UNKNOWN, which tells a
client nothing about whose fault it was. This step of the server stack replaces each
lb.v1 handler's request deserializer, when the handler is registered, with one that
turns a ``DecodeError`` into a marker instead of letting it escape into grpc, and
wraps the handler's behaviour so that it aborts with INVALID_ARGUMENT when it sees
the marker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from lb_service.errors import InvalidArgument
from lb_service.service.handlers import Step, Stream, Unary, rewrap
from lb_service.service.status import to_status

_Deserializer = Callable[[bytes], Any]


@dataclass(frozen=True, slots=True)
class Malformed:
    """Stands in for a request whose bytes did not parse, carrying the reason."""

    message: str


def tolerant(deserializer: _Deserializer, message_name: str) -> _Deserializer:
    """Wrap ``deserializer`` so undecodable bytes become a Malformed marker, not an error."""

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as error:
            # protobuf names the type again before the reason; say it once.
            reason = str(error).removeprefix(f"Error parsing message with type '{message_name}': ")
            return Malformed(f"request is not a valid {message_name}: {reason}")

    return deserialize


def refusing_malformed(request_types: dict[str, str]) -> Step:
    """The step that refuses undecodable requests of the methods in ``request_types``.

    ``request_types`` maps each checked method's full name to its request message's.
    """

    def step(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        message_name = request_types.get(method)
        if message_name is None or handler.request_streaming:
            return handler
        return rewrap(
            handler,
            _guard_unary,
            _guard_stream,
            request_deserializer=tolerant(handler.request_deserializer, message_name),
        )

    return step


def request_types(service: Any) -> dict[str, str]:
    """Map each method of a service descriptor to its request message's full name."""
    return {
        f"/{service.full_name}/{method.name}": method.input_type.full_name
        for method in service.methods
    }


async def _refuse(request: Malformed, context: grpc.aio.ServicerContext) -> None:
    status = to_status(InvalidArgument(request.message))
    await context.abort(status.code, status.details, status.trailing_metadata)


def _guard_unary(behaviour: Unary) -> Unary:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await _refuse(request, context)
        return await behaviour(request, context)

    return guarded


def _guard_stream(behaviour: Stream) -> Stream:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if isinstance(request, Malformed):
            await _refuse(request, context)
        async for response in behaviour(request, context):
            yield response

    return guarded

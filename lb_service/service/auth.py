"""Bearer-token authorization for RPCs, as a grpc.aio server interceptor."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

import grpc

#: The RPCs that change what the balancer does; they need the token whenever one is set.
ADMIN_METHODS = frozenset(
    f"/lb.v1.LoadBalancer/{name}"
    for name in (
        "RegisterAgent",
        "DeregisterAgent",
        "UpdateWeights",
        "SetStrategy",
        "DrainAgent",
        # Whoever registers an agent holds the token; without it anyone could keep a
        # dead heartbeat agent looking alive.
        "Heartbeat",
    )
)
#: What the "token on everything" option protects: every lb.v1 RPC and server reflection.
#: Health checks stay open so orchestrators can probe without a secret.
SERVICE_PREFIX = "/lb.v1.LoadBalancer/"
REFLECTION_PREFIX = "/grpc.reflection."


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires ``authorization: Bearer <token>`` on protected RPCs.

    A missing header is UNAUTHENTICATED, a wrong token PERMISSION_DENIED; either way
    the RPC's handler never runs, so nothing changes.
    """

    def __init__(self, token: str, protect_all: bool = False) -> None:
        """Protect admin RPCs with ``token``; with ``protect_all``, every lb.v1 RPC."""
        self._expected = f"Bearer {token}".encode()
        self._protect_all = protect_all

    def _protects(self, method: str) -> bool:
        if self._protect_all:
            return method.startswith((SERVICE_PREFIX, REFLECTION_PREFIX))
        return method in ADMIN_METHODS

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Pass the call on, or replace its handler with one that refuses it."""
        handler = await continuation(details)
        if handler is None or not self._protects(details.method):
            return handler
        refusal = self._refusal(details.invocation_metadata or ())
        if refusal is None:
            return handler
        return _refusing(handler, *refusal)

    def _refusal(self, metadata: Collection[Any]) -> tuple[grpc.StatusCode, str] | None:
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "this RPC needs 'authorization: Bearer <token>' metadata",
            )
        presented = values[0].encode() if isinstance(values[0], str) else values[0]
        # Constant-time comparison, so response timing does not reveal the token.
        if not hmac.compare_digest(presented, self._expected):
            return grpc.StatusCode.PERMISSION_DENIED, "the bearer token is not valid"
        return None


def _refusing(
    handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that ends the call with ``code``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - abort raises; the yield makes this a stream handler

    if handler.request_streaming:  # server reflection: a bidirectional stream
        return grpc.stream_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            refuse_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )

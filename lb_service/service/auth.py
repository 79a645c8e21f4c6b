"""Bearer-token authorization for RPCs, a step of the server stack.

Which methods need the token is known when they are registered, so only their
handlers are wrapped; the token itself is checked on every call of those.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Collection
from typing import Any

import grpc

from lb_service.service.handlers import Stream, Unary, rewrap

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


class TokenAuth:
    """Requires ``authorization: Bearer <token>`` on protected RPCs.

    A missing header is UNAUTHENTICATED, a wrong token PERMISSION_DENIED; either way
    the RPC's behaviour never runs, so nothing changes.
    """

    def __init__(self, token: str, protect_all: bool = False) -> None:
        """Protect admin RPCs with ``token``; with ``protect_all``, every lb.v1 RPC."""
        self._expected = f"Bearer {token}".encode()
        self._protect_all = protect_all

    def protects(self, method: str) -> bool:
        """Whether calls of ``method`` (its full name) need the token."""
        if self._protect_all:
            return method.startswith((SERVICE_PREFIX, REFLECTION_PREFIX))
        return method in ADMIN_METHODS

    def step(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """The server-stack step: a protected method's calls are checked before they run."""
        if not self.protects(method):
            return handler
        return rewrap(handler, self._unary, self._stream)

    def refusal(self, metadata: Collection[Any]) -> tuple[grpc.StatusCode, str] | None:
        """Why a call with ``metadata`` is refused, or None when its token is the right one."""
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

    def _unary(self, behaviour: Unary) -> Unary:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            refusal = self.refusal(context.invocation_metadata() or ())
            if refusal is not None:
                await context.abort(*refusal)
            return await behaviour(request, context)

        return checked

    def _stream(self, behaviour: Stream) -> Stream:
        async def checked(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            refusal = self.refusal(context.invocation_metadata() or ())
            if refusal is not None:
                await context.abort(*refusal)
            async for response in behaviour(request, context):
                yield response

        return checked

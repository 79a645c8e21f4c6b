"""The server stack: cross-cutting steps applied to each method once, when it is registered.

grpc.aio server interceptors run for every call: an awaited ``intercept_service`` per
interceptor per RPC, each looking its handler up again. The steps here (observation,
draining, authorization, refusing undecodable requests) depend only on the method,
so ``ServiceStack`` applies them when a service is registered, and grpc then serves
the decorated handlers as it serves any registered method, with no per-call lookup.

``ServiceStack`` offers the two registration calls generated ``add_*_to_server``
functions make, so ``add_LoadBalancerServicer_to_server(servicer, stack)`` and the
health and reflection equivalents register through it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import grpc

from lb_service.service.handlers import Step, apply


class Registrar(Protocol):
    """What registering a service needs of a server: the calls generated code makes."""

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Serve the methods ``handlers`` find per call."""

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """Serve ``service``'s methods, name -> handler."""


class ServiceStack:
    """Registers services on a grpc.aio server behind ``steps``, the first one outermost."""

    def __init__(self, server: grpc.aio.Server, steps: Sequence[Step]) -> None:
        """Register on ``server``; every method is decorated by ``steps`` as it is added."""
        self._server = server
        self._steps = tuple(steps)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """Serve ``service``'s methods (name -> handler), each decorated now, once."""
        decorated = {
            name: apply(self._steps, f"/{service}/{name}", handler)
            for name, handler in handlers.items()
        }
        # Registered methods are matched by grpc core and take precedence; the generic
        # handler answers callers that do not use the registered path.
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, decorated),)
        )
        self._server.add_registered_method_handlers(service, decorated)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Serve methods found per call by ``handlers``, behind the same steps.

        A generic handler cannot list its methods in advance, so each method is
        decorated the first time it is asked for and the result is kept. Generated
        registration functions also pass their service here; their registered methods
        take precedence, so this path serves only what has no registered method.
        """
        self._server.add_generic_rpc_handlers(
            tuple(_Decorated(handler, self._steps) for handler in handlers)
        )


class _Decorated(grpc.GenericRpcHandler):  # type: ignore[misc]
    """A generic handler whose methods are served behind the steps, decorated once each."""

    def __init__(self, inner: grpc.GenericRpcHandler, steps: tuple[Step, ...]) -> None:
        self._inner = inner
        self._steps = steps
        self._decorated: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        """The decorated handler of the called method, or None when ``inner`` has none."""
        handler = self._inner.service(details)
        if handler is None:
            return None
        method = details.method
        known = self._decorated.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        decorated = apply(self._steps, method, handler)
        self._decorated[method] = (handler, decorated)
        return decorated

"""A server-stack step that counts and times every RPC, learns its code, and tags its log lines.

What it counts follows go-grpc-prometheus, so dashboards built for Go servers read it:
an RPC's start, each message received and sent, and its end with its code and time.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal, Protocol

import grpc
import structlog

from lb_service.service.handlers import Step, rewrap

#: go-grpc-prometheus's names for the four kinds of RPC.
RpcType = Literal["unary", "server_stream", "client_stream", "bidi_stream"]


class MethodRecorder(Protocol):
    """Receives what happens to the calls of one method; one per method, made once."""

    def started(self) -> None:
        """A call arrived."""

    def received(self) -> None:
        """A request message was read."""

    def sent(self) -> None:
        """A response message was written."""

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        """A call finished with ``code`` after ``seconds``."""


#: Returns the recorder of a method (its full name) of the given kind.
Recorders = Callable[[str, RpcType], MethodRecorder]


class _Nothing:
    """Records nothing (metrics are off)."""

    def started(self) -> None:
        pass

    def received(self) -> None:
        pass

    def sent(self) -> None:
        pass

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        pass


def record_nothing(method: str, kind: RpcType) -> MethodRecorder:
    """A recorder that drops everything, for a server without metrics."""
    return _Nothing()


def rpc_type(handler: grpc.RpcMethodHandler) -> RpcType:
    """The kind of RPC a handler serves, in go-grpc-prometheus's words."""
    if handler.request_streaming:
        return "bidi_stream" if handler.response_streaming else "client_stream"
    return "server_stream" if handler.response_streaming else "unary"


def observing(recorders: Recorders) -> Step:
    """The step that reports each method's calls, messages, code and duration, and binds ``rpc``.

    It applies to every method, whatever its service. Every log line written while an
    RPC runs carries ``rpc=/lb.v1.LoadBalancer/...``, so the servicer's own lines name
    their RPC without repeating it.
    """

    def observe(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return _wrap(method, recorders(method, rpc_type(handler)), handler)

    return observe


def _wrap(
    method: str, recorder: MethodRecorder, handler: grpc.RpcMethodHandler
) -> grpc.RpcMethodHandler:
    streamed = handler.request_streaming
    return rewrap(
        handler,
        lambda behaviour: _unary(method, recorder, behaviour, streamed_request=streamed),
        lambda behaviour: _streaming(method, recorder, behaviour, streamed_request=streamed),
    )


async def _counted(requests: AsyncIterator[Any], recorder: MethodRecorder) -> AsyncIterator[Any]:
    async for request in requests:
        recorder.received()
        yield request


def _begin(recorder: MethodRecorder, request: Any, streamed_request: bool) -> tuple[float, Any]:
    """Count a call as started and its request as received; return its start time and request.

    A streamed request is wrapped so that each message counts as it is read.
    """
    started = time.perf_counter()
    recorder.started()
    if streamed_request:
        return started, _counted(request, recorder)
    recorder.received()
    return started, request


def _unary(
    method: str,
    recorder: MethodRecorder,
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    streamed_request: bool = False,
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    """One response: the call is sent one message when it ends OK."""

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, request = _begin(recorder, request, streamed_request)
        code = grpc.StatusCode.UNKNOWN
        # bind/reset rather than structlog's bound_contextvars, which copies the
        # whole context on entry: that copy was a large share of a short RPC's cost.
        # A unary handler runs in one task, so its tokens reset in the same context.
        tokens = structlog.contextvars.bind_contextvars(rpc=method)
        try:
            response = await behaviour(request, context)
            code = _code(context, grpc.StatusCode.OK)
            if code is grpc.StatusCode.OK:
                recorder.sent()
            return response
        except BaseException:
            code = _code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            recorder.handled(code, time.perf_counter() - started)

    return observed


def _streaming(
    method: str,
    recorder: MethodRecorder,
    behaviour: Callable[[Any, grpc.aio.ServicerContext], Any],
    streamed_request: bool,
) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    """A response stream: each message the handler yields is counted as sent.

    A handler that writes with ``context.write`` instead of yielding (grpc's health
    ``Watch``) is awaited as it is; its messages are not seen, so not counted.
    """
    if not inspect.isasyncgenfunction(behaviour):

        async def awaited(request: Any, context: grpc.aio.ServicerContext) -> None:
            started, request = _begin(recorder, request, streamed_request)
            code = grpc.StatusCode.UNKNOWN
            with structlog.contextvars.bound_contextvars(rpc=method):
                try:
                    await behaviour(request, context)
                    code = _code(context, grpc.StatusCode.OK)
                except BaseException as error:
                    code = _failure_code(error, context, code)
                    raise
                finally:
                    recorder.handled(code, time.perf_counter() - started)

        return awaited

    async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started, request = _begin(recorder, request, streamed_request)
        code = grpc.StatusCode.UNKNOWN
        with structlog.contextvars.bound_contextvars(rpc=method):
            try:
                async for response in behaviour(request, context):
                    recorder.sent()
                    yield response
                code = _code(context, grpc.StatusCode.OK)
            except GeneratorExit:
                code = grpc.StatusCode.CANCELLED
                raise
            except BaseException as error:
                code = _failure_code(error, context, code)
                raise
            finally:
                recorder.handled(code, time.perf_counter() - started)

    return observed


def _failure_code(
    error: BaseException, context: grpc.aio.ServicerContext, default: grpc.StatusCode
) -> grpc.StatusCode:
    # asyncio.CancelledError: the client went away (or the server is stopping).
    if type(error).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return _code(context, default)


def _code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> grpc.StatusCode:
    # context.code() holds what abort() or set_code() set; None means the handler
    # finished without setting one.
    code = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return code
    return next((c for c in grpc.StatusCode if c.value[0] == code), default)

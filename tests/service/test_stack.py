"""The server stack: steps applied to each method once, at registration, in their order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from lb_service.service.handlers import Step, Stream, Unary, rewrap
from lb_service.service.stack import ServiceStack


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _twice(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield request
    yield request


class Recording:
    """A step that counts the methods it decorates and logs each call's way in and out."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.decorated: list[str] = []

    def step(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self.decorated.append(method)
        return rewrap(handler, self._unary, self._stream)

    def _unary(self, behaviour: Unary) -> Unary:
        async def logged(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self.log.append(f"{self.name} in")
            try:
                return await behaviour(request, context)
            finally:
                self.log.append(f"{self.name} out")

        return logged

    def _stream(self, behaviour: Stream) -> Stream:
        async def logged(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            self.log.append(f"{self.name} in")
            async for response in behaviour(request, context):
                yield response
            self.log.append(f"{self.name} out")

        return logged


@pytest.fixture
def log() -> list[str]:
    """What the recording steps saw, in order."""
    return []


async def _serve(steps: list[Step], register: Any) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    register(ServiceStack(server, steps))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_each_method_is_decorated_once_when_registered_not_per_call(log: list[str]) -> None:
    """Registering two methods decorates each once; five calls decorate nothing more."""
    step = Recording("only", log)
    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(_echo),
        "Twice": grpc.unary_stream_rpc_method_handler(_twice),
    }
    server, port = await _serve(
        [step.step], lambda stack: stack.add_registered_method_handlers("t.S", handlers)
    )
    assert step.decorated == ["/t.S/Echo", "/t.S/Twice"]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(5):
                assert await channel.unary_unary("/t.S/Echo")(b"x") == b"x"
            assert [r async for r in channel.unary_stream("/t.S/Twice")(b"y")] == [b"y", b"y"]
    finally:
        await server.stop(0)
    assert step.decorated == ["/t.S/Echo", "/t.S/Twice"]
    assert log.count("only in") == 6


async def test_the_first_step_is_outermost(log: list[str]) -> None:
    """A call passes the steps in their order on the way in and the reverse on the way out."""
    outer, inner = Recording("outer", log), Recording("inner", log)
    handlers = {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    server, port = await _serve(
        [outer.step, inner.step],
        lambda stack: stack.add_registered_method_handlers("t.S", handlers),
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.unary_unary("/t.S/Echo")(b"x")
    finally:
        await server.stop(0)
    assert log == ["outer in", "inner in", "inner out", "outer out"]


async def test_a_generic_handlers_method_is_decorated_on_first_call_then_reused(
    log: list[str],
) -> None:
    """Methods found per call are decorated once each, the first time they are called."""
    step = Recording("only", log)
    generic = grpc.method_handlers_generic_handler(
        "t.G", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server, port = await _serve(
        [step.step], lambda stack: stack.add_generic_rpc_handlers([generic])
    )
    assert step.decorated == []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(3):
                assert await channel.unary_unary("/t.G/Echo")(b"x") == b"x"
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await channel.unary_unary("/t.G/Missing")(b"x")
    finally:
        await server.stop(0)
    assert missing.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert step.decorated == ["/t.G/Echo"]
    assert log == ["only in", "only out"] * 3

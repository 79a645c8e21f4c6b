"""Tiny loopback HTTP servers that answer each path with canned bytes, or misbehave.

Raw asyncio, not a web framework: the misbehaviour (a body that never ends, a trickle,
a redirect loop, garbage) is written to the socket exactly as a broken agent would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

#: Writes one answer to the connection.
Answer = Callable[[asyncio.StreamWriter], Awaitable[None]]
#: A kept-alive server's answer to one path: status, body, headers.
Route = tuple[int, bytes, Mapping[str, str]]
#: Most seconds any misbehaving answer keeps a connection, so no test can hang on one.
BOUND_S = 10.0


def canned(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> Answer:
    """An answer with this status, headers and body (with Content-Length)."""

    async def write(writer: asyncio.StreamWriter) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return write


def endless(chunk: bytes = b"x" * 65536) -> Answer:
    """A 200 whose body never ends (until the client hangs up or BOUND_S passes)."""

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(BOUND_S):
            while True:
                writer.write(chunk)
                await writer.drain()

    return write


def trickle(interval_s: float = 0.2) -> Answer:
    """A 200 whose body comes one byte per ``interval_s``: each read is quick, the whole is not."""

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(BOUND_S):
            for _ in range(1000):
                writer.write(b"{")
                await writer.drain()
                await asyncio.sleep(interval_s)

    return write


def silent() -> Answer:
    """Read the request and never answer (until BOUND_S passes)."""

    async def write(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(BOUND_S)

    return write


#: One client connection's whole conversation with a test server.
Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def _serving(session: Session) -> AsyncIterator[int]:
    """Run ``session`` per connection on 127.0.0.1; yields the port; no handler outlives it."""
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await session(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client hung up, as a prober at its limit does
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        # Handlers still running (a bounded trickle) must not outlive the test.
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


@contextlib.asynccontextmanager
async def serve(routes: Mapping[str, Answer]) -> AsyncIterator[int]:
    """Serve ``routes`` (path -> answer; others 404) on 127.0.0.1; yields the port."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
        path = head.split(b" ", 2)[1].decode()
        await routes.get(path, canned(404))(writer)

    async with _serving(session) as port:
        yield port


class KeptAlive:
    """What a keep-alive server saw: one list of request heads per connection."""

    def __init__(self) -> None:
        self.connections: list[list[bytes]] = []

    @property
    def paths(self) -> list[str]:
        """Every request's path, in order, whatever the connection."""
        return [head.split(b" ", 2)[1].decode() for conn in self.connections for head in conn]


@contextlib.asynccontextmanager
async def serve_kept_alive(
    routes: Mapping[str, Route],
) -> AsyncIterator[tuple[int, KeptAlive]]:
    """Serve ``routes`` (path -> status, body, headers; others 404) keeping connections open.

    Yields the port and the record of connections and the requests on each.
    """
    seen = KeptAlive()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads: list[bytes] = []
        seen.connections.append(heads)
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
            heads.append(head)
            path = head.split(b" ", 2)[1].decode()
            status, body, headers = routes.get(path, (404, b"", {}))
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()

    async with _serving(session) as port:
        yield port, seen


def chunked(size: int) -> Answer:
    """A 200 with a chunked body of ``size`` bytes in all (no Content-Length to go by)."""

    async def write(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        left = size
        while left:
            piece = min(left, 65536)
            writer.write(f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n")
            await writer.drain()
            left -= piece
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return write


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port

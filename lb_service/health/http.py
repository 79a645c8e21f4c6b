"""A small HTTP/1.1 GET client for probes: one kept-alive connection per agent, bounded answers.

Probes ask tiny questions (``GET /health``) of many agents, again and again. A general
client's machinery per request (aiohttp's was ~150 µs of CPU, most of a probe's cost
with a thousand agents) is spent on features a probe never uses. This client does only
what a probe needs, over ``asyncio.Protocol`` with httptools (llhttp, Node's parser)
doing the parsing:

- ``GET`` with ``Accept-Encoding: identity``; redirects are answers, never followed;
- the head is refused past ``max_head_bytes``, the body past ``max_body_bytes`` (the
  connection is dropped at once);
- a connection is reused only when the answer ended cleanly and both sides keep it
  alive; one the agent closed just as it was reused is tried once more on a new one;
- idle connections are dropped after ``keepalive_s``.

There is no timeout here: the prober bounds each whole probe with ``asyncio.timeout``,
and a cancelled request drops its connection. Every failure is an ``HttpFailure``
whose text is the reason an operator reads.
"""

from __future__ import annotations

import asyncio
import errno
import time
import typing
from dataclasses import dataclass

import httptools

__all__ = ["Answer", "HttpFailure", "Pool"]

#: The largest response head (status line and headers) read before giving up.
DEFAULT_MAX_HEAD_BYTES = 64 << 10


class HttpFailure(Exception):
    """A request failed; the message is the probe's reason (``probe: connection refused``)."""


class _HungUp(HttpFailure):
    """The agent closed the connection before answering (maybe a stale kept-alive one)."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A complete answer: status, where a redirect points (empty if none), the body."""

    status: int
    location: str
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection to one agent, one request at a time (httptools calls the ``on_*``)."""

    def __init__(self, max_head: int, max_body: int) -> None:
        self._max_head, self._max_body = max_head, max_body
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._path = ""
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self._head_size = 0  # bytes read while the head was unfinished
        self._header_bytes = 0
        self._headers_done = False
        self._location = ""
        self._framed = False  # a Content-Length or chunked body: its end is known
        self._body: list[bytes] = []
        self._size = 0

    @property
    def usable(self) -> bool:
        """Whether a new request may go out on it."""
        return self._transport is not None and not self._transport.is_closing()

    def request(self, host: str, path: str) -> asyncio.Future[Answer]:
        """Send ``GET path``; the future is its answer or an ``HttpFailure``."""
        assert self._transport is not None
        self._reset()
        self._path = path
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Encoding: identity\r\n"
            "User-Agent: lb-service-probe\r\n\r\n".encode("latin-1")
        )
        return self._waiter

    def drop(self) -> None:
        """Close at once, unread data and all."""
        if self._transport is not None:
            self._transport.abort()
            self._transport = None

    # asyncio.Protocol.
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (create_connection); not checked with isinstance: uvloop's
        # transports (the server's loop where installed) are not asyncio.Transport's.
        self._transport = typing.cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._headers_done and not self._framed:
            self._finish()  # a body that runs until the agent closes: this is its end
        elif self._head_size == 0:
            self._fail(_HungUp(f"probe: agent hung up on {self._path}"))
        else:
            self._fail(HttpFailure(f"probe: answer from {self._path} cut short"))

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.drop()  # bytes nobody asked for: the connection cannot be trusted
            return
        if not self._headers_done:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail(HttpFailure(f"probe: bad HTTP answer from {self._path}"))
            return
        # A head still unfinished past the bound (on_headers_complete checks the one that
        # finished): the parser holds at most one read's worth of it meanwhile.
        if not self._headers_done and self._head_size > self._max_head:
            self._fail(HttpFailure(f"probe: headers from {self._path} too long"))

    # httptools callbacks.
    def on_message_begin(self) -> None:
        if self._waiter is None or self._waiter.done():
            self.drop()  # a second answer to one request: the connection cannot be trusted

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        name = name.lower()
        if name == b"location":
            self._location = value.decode("latin-1")[:100]
        elif name == b"content-length" or (
            name == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._header_bytes > self._max_head:  # a head that came in one read
            self._fail(HttpFailure(f"probe: headers from {self._path} too long"))

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max_body:
            self._fail(HttpFailure(f"probe: body over {_size(self._max_body)}"))
        elif self._waiter is not None and not self._waiter.done():
            self._body.append(body)

    def on_message_complete(self) -> None:
        self._framed = True  # complete: the close that may follow is not its end
        if not self._parser.should_keep_alive() and self._transport is not None:
            self._transport.close()
        self._finish()

    # Outcomes.
    def _finish(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            answer = Answer(self._parser.get_status_code(), self._location, b"".join(self._body))
            self._waiter.set_result(answer)

    def _fail(self, failure: HttpFailure) -> None:
        self.drop()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(failure)


class Pool:
    """Kept-alive connections by agent address; ``get`` asks one question of one agent."""

    def __init__(
        self,
        *,
        max_body_bytes: int,
        keepalive_s: float,
        max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
    ) -> None:
        """Bound heads and bodies by the byte counts; drop connections idle ``keepalive_s``."""
        self._max_head, self._max_body = max_head_bytes, max_body_bytes
        self._keepalive_s = keepalive_s
        self._idle: dict[tuple[str, int], _Connection] = {}
        self._next_prune = 0.0

    async def get(self, host: str, port: int, path: str) -> Answer:
        """The answer to ``GET path`` from ``host:port``; an ``HttpFailure`` otherwise."""
        if not (path.isascii() and path.isprintable()) or " " in path:
            raise HttpFailure("probe: invalid probe path")  # it would break the request line
        key = (host.strip("[]"), port)
        connection = self._idle.pop(key, None)
        if connection is not None and connection.usable:
            try:
                return await self._ask(key, connection, path)
            except _HungUp:
                pass  # closed by the agent as we reused it: once more, on a new one
        elif connection is not None:
            connection.drop()
        return await self._ask(key, await self._connect(host, port), path)

    async def _ask(self, key: tuple[str, int], connection: _Connection, path: str) -> Answer:
        try:
            host = f"[{key[0]}]" if ":" in key[0] else key[0]  # an IPv6 literal
            answer = await connection.request(f"{host}:{key[1]}", path)
        except BaseException:  # a failure, or a timeout's cancellation mid-answer
            connection.drop()
            raise
        if connection.usable:
            self._keep(key, connection)
        return answer

    def _keep(self, key: tuple[str, int], connection: _Connection) -> None:
        now = time.monotonic()
        connection.idle_since = now
        other = self._idle.pop(key, None)
        if other is not None:
            other.drop()
        self._idle[key] = connection
        if now >= self._next_prune:
            # Agents deregistered since leave idle connections behind: drop the stale
            # ones now and then (once per keep-alive), not on every request.
            self._next_prune = now + self._keepalive_s
            for stale in [
                k for k, c in self._idle.items() if now - c.idle_since > self._keepalive_s
            ]:
                self._idle.pop(stale).drop()

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_head, self._max_body), host, port
            )
        except ConnectionRefusedError:
            raise HttpFailure("probe: connection refused") from None
        except OSError as error:
            if error.errno == errno.ECONNREFUSED:  # pragma: no cover (raised as above)
                raise HttpFailure("probe: connection refused") from None
            raise HttpFailure(f"probe: cannot connect ({str(error)[:80]})") from None
        except (ValueError, OverflowError, UnicodeError):
            raise HttpFailure("probe: invalid agent address") from None
        return connection

    def close(self) -> None:
        """Drop every idle connection."""
        for connection in self._idle.values():
            connection.drop()
        self._idle.clear()


def _size(limit: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"

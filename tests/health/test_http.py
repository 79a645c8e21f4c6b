"""The probes' HTTP client on its own: keep-alive rules, answer framing, and stale connections."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from lb_service.health.http import HttpFailure, Pool
from tests.health.servers import BOUND_S, canned, serve


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    """A pool with a 1 KiB body cap, closed after the test."""
    made = Pool(max_body_bytes=1024, keepalive_s=60.0)
    try:
        yield made
    finally:
        made.close()


@contextlib.asynccontextmanager
async def raw(
    answers: list[bytes], close_after: bool = False
) -> AsyncIterator[tuple[int, list[int]]]:
    """A server answering the n-th request on a connection with ``answers[n]``, byte by byte.

    Yields the port and, per connection, how many requests it read. With ``close_after``
    it closes each connection once its answers are written (a server's idle timeout).
    """
    counts: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counts.append(0)
        slot = len(counts) - 1
        try:
            for answer in answers:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND_S)
                counts[slot] += 1
                for byte in answer:  # the worst fragmentation there is
                    writer.write(bytes([byte]))
                await writer.drain()
            if not close_after:
                await asyncio.wait_for(reader.read(), BOUND_S)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], counts
    finally:
        server.close()
        await server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def test_an_answer_in_one_byte_pieces_is_read_whole(pool: Pool) -> None:
    """Framing does not depend on how the bytes arrive."""
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n"
    async with raw([OK, chunked]) as (port, counts):
        first = await pool.get("127.0.0.1", port, "/")
        second = await pool.get("127.0.0.1", port, "/")
    assert (first.status, first.body, second.body) == (200, b"ok", b"abc")
    assert counts == [2]  # both on one kept-alive connection


async def test_a_body_until_close_is_read_and_the_connection_not_kept(pool: Pool) -> None:
    """No length and no chunks: the body runs until the agent closes, then a new connection."""
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    async with (
        serve({"/": canned(200, b"x")}) as _,
        raw([until_close], close_after=True) as (
            port,
            counts,
        ),
    ):
        first = await pool.get("127.0.0.1", port, "/")
        second = await pool.get("127.0.0.1", port, "/")
    assert (first.body, second.body) == (b"all of it", b"all of it")
    assert counts == [1, 1]


async def test_a_kept_connection_the_agent_closed_is_replaced_without_a_failure(pool: Pool) -> None:
    """An agent that closes idle connections (its keep-alive timeout) costs no failed probe."""
    async with raw([OK], close_after=True) as (port, counts):
        await pool.get("127.0.0.1", port, "/")
        await asyncio.sleep(0.05)  # the close arrives while the connection is idle
        again = await pool.get("127.0.0.1", port, "/")
    assert again.body == b"ok"
    assert counts == [1, 1]


async def test_a_stale_connection_closed_as_it_is_reused_is_tried_once_more(pool: Pool) -> None:
    """Closed by the agent after the request went out, before any answer: asked again once."""
    hang_up_then_ok: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if not hang_up_then_ok:
            hang_up_then_ok.append(b"")
            writer.write(OK)  # the first answer, then the next request finds it gone
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            writer.transport.abort()
            return
        writer.write(OK)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await pool.get("127.0.0.1", port, "/")
        again = await pool.get("127.0.0.1", port, "/")
    finally:
        server.close()
    assert again.body == b"ok"


async def test_a_path_that_would_break_the_request_line_is_refused(pool: Pool) -> None:
    """A probe path with spaces, control characters or non-ASCII never reaches the wire."""
    for path in ["/a b", "/x\r\nHost: evil", "/é"]:
        with pytest.raises(HttpFailure, match="probe: invalid probe path"):
            await pool.get("127.0.0.1", 1, path)


async def test_bytes_nobody_asked_for_drop_the_connection(pool: Pool) -> None:
    """An agent that talks between requests is not trusted with the next one."""
    async with raw([OK + b"HTTP/1.1 200 OK\r\n\r\n"]) as (port, counts):
        await pool.get("127.0.0.1", port, "/")
        await asyncio.sleep(0.05)
        again = await pool.get("127.0.0.1", port, "/")
    assert again.body == b"ok"
    assert len(counts) == 2  # the second request went out on a new connection


async def test_a_cancelled_request_drops_its_connection(pool: Pool) -> None:
    """A timeout mid-answer leaves no half-read connection: the next request opens a new one."""
    async with raw([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab"]) as (port, counts):
        for _ in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.get("127.0.0.1", port, "/")
    assert counts == [1, 1]


def test_probes_work_on_uvloop_the_servers_default_loop() -> None:
    """The client reads answers on uvloop too, whose transports are not asyncio.Transport's."""
    uvloop = pytest.importorskip("uvloop")  # a dependency except on Windows

    async def probe_twice() -> tuple[int, bytes, list[int]]:
        made = Pool(max_body_bytes=1024, keepalive_s=60.0)
        try:
            async with raw([OK, OK]) as (port, counts):
                await made.get("127.0.0.1", port, "/")
                answer = await made.get("127.0.0.1", port, "/")
            return answer.status, answer.body, counts
        finally:
            made.close()

    assert uvloop.run(probe_twice()) == (200, b"ok", [2])

"""A real LoadBalancerServer on 127.0.0.1:0, run on an event loop in a background thread.

The blocking client and the in-process CLI block the test's own thread, so the server
cannot share it; a thread with its own loop hosts it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore

#: Longest any test waits on the server thread; a hang fails instead of stalling the suite.
HANG_GUARD_S = 10.0

_T = TypeVar("_T")


class ThreadServer:
    """A started server in a thread: ``target`` to connect, ``balancer`` to inspect."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self._options = options or ServerOptions()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: LoadBalancerServer | None = None
        self.balancer: LoadBalancer | None = None
        self.port = 0

    @property
    def target(self) -> str:
        """The HOST:PORT clients connect to."""
        return f"127.0.0.1:{self.port}"

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(HANG_GUARD_S)

    def start(self) -> ThreadServer:
        """Start the loop thread and the server on a free loopback port."""
        self._thread.start()
        self.port = self.run(self._start())
        return self

    async def _start(self) -> int:
        # grpc.aio binds a server to the loop it is created on: create it there.
        self.balancer = LoadBalancer(MemoryStore(), BalancerConfig())
        options = dataclasses.replace(self._options, listen="127.0.0.1:0", grace_period_s=0.5)
        self._server = LoadBalancerServer(self.balancer, options)
        return await self._server.start()

    def stop(self) -> None:
        """Stop the server, then the loop and its thread; a second call does nothing."""
        if self._loop.is_closed():
            return
        try:
            if self._server is not None:
                self.run(self._server.stop(0))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(HANG_GUARD_S)
            self._loop.close()


@contextlib.contextmanager
def refusing_target() -> Iterator[str]:
    """A loopback HOST:PORT that refuses connections: bound, so no one takes it, never listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"

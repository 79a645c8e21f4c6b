"""Fixtures for the client tests: a live server in a thread, a scripted server, a dead port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lb_service.client import LoadBalancerClient
from tests.client.fakes import ScriptedServer, start_scripted
from tests.client.serving import ThreadServer, refusing_target


@pytest.fixture
def server() -> Iterator[ThreadServer]:
    """A plaintext lb-service server without auth on a free loopback port."""
    running = ThreadServer().start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def client(server: ThreadServer) -> Iterator[LoadBalancerClient]:
    """A blocking client connected to ``server``."""
    with LoadBalancerClient(server.target) as connected:
        yield connected


@pytest.fixture
def scripted() -> Iterator[ScriptedServer]:
    """A scripted lb.v1 server (see ScriptedServicer) on a free loopback port."""
    server, scripted = start_scripted()
    try:
        yield scripted
    finally:
        scripted.servicer.release.set()
        scripted.servicer.watch_ended.set()
        server.stop(0)


@pytest.fixture
def dead_target() -> Iterator[str]:
    """A loopback address that refuses connections."""
    with refusing_target() as target:
        yield target

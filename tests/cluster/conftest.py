"""Fixtures for the replica tests: start N replicas on the session's Redis, talk to them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import pytest

from tests.cluster.replicas import Client, start_replicas, stop_replicas
from tests.reliability.server_process import ServerProcess

StartCluster = Callable[..., list[ServerProcess]]
Connect = Callable[[Sequence[ServerProcess]], Client]


@pytest.fixture
def cluster(redis_url: str, redis_prefix: str) -> Iterator[StartCluster]:
    """Start replicas: ``cluster(3, *flags, store=url)``; every one is stopped (SIGTERM) after.

    They share the session's Redis (or ``store``) under this test's own key prefix.
    """
    started: list[ServerProcess] = []

    def start(count: int = 3, *args: str, store: str | None = None) -> list[ServerProcess]:
        replicas = start_replicas(count, store or redis_url, redis_prefix, *args)
        started.extend(replicas)
        return replicas

    try:
        yield start
    finally:
        stop_replicas(started)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Open a Client (one channel per replica) on some replicas; closed after the test."""
    clients: list[Client] = []

    def open_client(replicas: Sequence[ServerProcess]) -> Client:
        client = Client(replicas)
        clients.append(client)
        return client

    try:
        yield open_client
    finally:
        for client in clients:
            await client.close()

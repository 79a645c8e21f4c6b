"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lb_service.balancer import LoadBalancer
from tests.certs import Pki, make_pki
from tests.factories import FakeClock, balancer
from tests.redis_server import PrivateRedis, unique_prefix


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at a fixed time."""
    return FakeClock()


@pytest.fixture
def lb(clock: FakeClock) -> LoadBalancer:
    """A balancer with default options over a fresh memory store, driven by ``clock``."""
    return balancer(clock)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, made once per test session."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real Redis for the session: ``REDIS_URL`` if set, else a private redis-server."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = PrivateRedis()
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of this test's own, so tests never see each other's keys."""
    return unique_prefix()

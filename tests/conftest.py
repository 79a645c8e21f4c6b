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


#: Fixtures that reach a real Redis: the shared one, or a private redis-server of a test's own.
REDIS_FIXTURES = frozenset({"redis_url", "private_redis", "own_redis"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real Redis ``redis``, so ``make test-fast`` can leave it out.

    Derived from the fixtures a test uses rather than written on each test, so a new
    Redis test cannot be forgotten. A fixture reached only through
    ``request.getfixturevalue`` is not seen here: such a parametrisation marks itself
    (``new_store``'s ``redis`` case in tests/store/conftest.py).
    """
    for item in items:
        if REDIS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)

"""Store fixtures: the same store contract run over the memory store and the Redis store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from lb_service.store.memory import MemoryStore
from lb_service.store.redis import RedisStore
from lb_service.store.roles import Store

#: Request ids are ``test-1``, ``test-2``, ... in every store the fixtures make.
EPOCH = "test"

#: Makes a fresh, empty store of the kind under test (``epoch=None``: a random epoch).
MakeStore = Callable[..., Store]


async def drop_keys(url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (tests may share a Redis given by REDIS_URL)."""
    client = redis.asyncio.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def redis_stores(redis_url: str, redis_prefix: str) -> AsyncIterator[list[RedisStore]]:
    """Redis stores made by a test, closed and their keys dropped afterwards."""
    made: list[RedisStore] = []
    yield made
    for store in made:
        await store.close()
    prefixes = {store.prefix for store in made} | {redis_prefix}
    for prefix in prefixes:
        await drop_keys(redis_url, prefix)


# The Redis case asks for redis_url only when it runs (getfixturevalue), so the mark that
# keeps it out of `make test-fast` is given here rather than derived in tests/conftest.py.
@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def new_store(request: pytest.FixtureRequest) -> MakeStore:
    """A factory of fresh stores of one kind: the contract tests run once per kind.

    Redis stores made by one test share its prefix (one state, as replicas would).
    """
    if request.param == "memory":

        def memory(epoch: str | None = EPOCH, *, fresh_prefix: bool = False) -> Store:
            return MemoryStore(epoch=epoch)  # every memory store is a state of its own

        return memory
    url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("redis_prefix")
    made: list[RedisStore] = request.getfixturevalue("redis_stores")

    def shared(epoch: str | None = EPOCH, *, fresh_prefix: bool = False) -> Store:
        own = f"{prefix}-{len(made)}" if fresh_prefix else prefix
        store = RedisStore(url, prefix=own, epoch=epoch)
        made.append(store)
        return store

    return shared


@pytest.fixture
def store(new_store: MakeStore) -> Store:
    """An empty store of the kind under test, with request ids ``test-1``, ``test-2``, ..."""
    return new_store()


async def started(store: Store, agent_id: str, now_ms: int) -> str:
    """Open a lease with no limit to refuse it; its request id (typed ``str``, checked)."""
    request_id = await store.open_lease(agent_id, now_ms)
    assert isinstance(request_id, str), request_id
    return request_id

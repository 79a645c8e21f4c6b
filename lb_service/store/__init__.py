"""State storage: the Store interface, the in-memory store, and ``open_store`` to pick one."""

from __future__ import annotations

from urllib.parse import urlsplit

from lb_service.model import StrategyName
from lb_service.store.base import (
    AgentStats,
    Binding,
    Counters,
    EndOutcome,
    EndResult,
    Lease,
    Pick,
    PickState,
    RequestEnd,
)
from lb_service.store.memory import MemoryStore
from lb_service.store.roles import Store

#: URL schemes ``open_store`` hands to the Redis store.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})

__all__ = [
    "REDIS_SCHEMES",
    "AgentStats",
    "Binding",
    "Counters",
    "EndOutcome",
    "EndResult",
    "Lease",
    "MemoryStore",
    "Pick",
    "PickState",
    "RequestEnd",
    "Store",
    "close_store",
    "open_store",
]


def open_store(
    url: str,
    prefix: str = "lb",
    timeout_ms: float = 500.0,
    pool_size: int = 32,
    retries: int = 1,
    strategy: StrategyName = StrategyName.LEAST_CONNECTIONS,
) -> Store:
    """The store ``url`` names, not yet connected (no I/O happens here).

    - ``"memory"``: a ``MemoryStore`` starting with ``strategy``; the other options do
      not apply to it. Its state is this process's alone.
    - ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL: a ``RedisStore`` keeping
      every key under ``<prefix>:``, so replicas given the same URL and prefix act as
      one balancer and different prefixes share one Redis without meeting. Each call
      fails within about ``timeout_ms`` per attempt (connect, read, and the wait for
      one of ``pool_size`` connections) and is retried ``retries`` times on connection
      errors; Redis errors surface as ``StoreUnavailable``. ``strategy`` is written
      only if the prefix has none stored yet (the first replica's wins; ``set_strategy``
      changes it for all). It holds connections and, while anyone waits for changes,
      a polling task: release them with ``close_store`` (or ``await store.close()``).

    Raises ValueError for any other URL, or an unusable option, with a message naming
    the accepted forms.
    """
    if url == "memory":
        return MemoryStore(strategy=strategy)
    if urlsplit(url).scheme not in REDIS_SCHEMES:
        raise ValueError(
            f"unknown store {url!r}: use 'memory', or a redis://, rediss:// or unix:// URL"
        )
    # Imported here: the memory store, the default, needs no Redis client loaded.
    from lb_service.store.redis import RedisStore

    return RedisStore(
        url,
        prefix=prefix,
        timeout_ms=timeout_ms,
        pool_size=pool_size,
        retries=retries,
        strategy=strategy,
    )


async def close_store(store: Store) -> None:
    """Release what a store holds (a Redis store's connections and poller); a no-op for memory."""
    await store.close()

"""``RedisStore``: every group of the Redis store's operations, as one ``Store``."""

from __future__ import annotations

import asyncio
import contextlib

from lb_service.store.redis.decisions import Decisions
from lb_service.store.redis.feed import ChangeFeed
from lb_service.store.redis.health import HealthRecords
from lb_service.store.redis.housekeeping import Housekeeping
from lb_service.store.redis.leases import Leases
from lb_service.store.redis.reads import Reads
from lb_service.store.redis.registry import Registry
from lb_service.store.redis.reports import Reports


class RedisStore(
    Registry, Decisions, Leases, Housekeeping, HealthRecords, Reports, Reads, ChangeFeed
):
    """State shared through Redis by every replica using the same URL and prefix.

    ``start()`` is optional (it checks the server and warms the cache; everything is
    also done lazily on first use). ``close()`` stops the version poller and closes
    the connection pool; call it when the store is no longer used.

    Request ids are ``<epoch>-<n>`` as in the memory store, with ``epoch`` random hex
    created once per prefix in Redis and ``n`` counted there, shared by all replicas.
    ``epoch`` fixes the epoch a prefix gets when this store is the one that creates it
    (tests); otherwise a fresh random one is proposed.
    """

    async def start(self) -> None:
        """Check the server answers and load the configuration (optional; see the class)."""
        await self.check()
        await self._current_config()
        raw = await self._call(lambda r: r.get(self._key("version")))
        self._observed(raw)

    async def close(self) -> None:
        """Stop polling for changes and close every connection."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self._redis.aclose()

    async def check(self) -> None:
        """Return when Redis answers PING; raise ``StoreUnavailable`` when it does not."""
        await self._call(lambda r: r.ping())

"""Change notification: how a WatchLoads stream on any replica sees every change.

Every state change increments ``<prefix>:version`` inside its
script and the replica keeps the highest value it has seen (``version()``). While
anyone waits in ``wait_for_change``, one background task polls that key every
``POLL_INTERVAL_S``, so a WatchLoads stream on any replica sees changes made through
another within a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib

from lb_service.errors import StoreUnavailable
from lb_service.store.redis.core import RedisCore

#: How often one replica reads the state version while anyone waits for a change.
POLL_INTERVAL_S = 0.2


class ChangeFeed(RedisCore):
    """The state version: waiting for it to move, and polling it while anyone waits."""

    async def wait_for_change(self, seen_version: int) -> int:
        """Wait until the state version differs from ``seen_version``; return the new one.

        Changes made through this replica wake waiters at once; those made through
        others are seen by the shared poller within ``POLL_INTERVAL_S``.
        """
        self._waiters += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_versions())
        try:
            while self._version == seen_version:
                if self._changed.is_set():
                    # The change it signalled has been seen: arm a fresh event to wait on.
                    self._changed = asyncio.Event()
                await self._changed.wait()
        finally:
            self._waiters -= 1
        return self._version

    def version(self) -> int:
        """The highest state version this replica has seen (from its calls or the poller)."""
        return self._version

    async def _poll_versions(self) -> None:
        """Read the state version every POLL_INTERVAL_S while anyone waits (one per store)."""
        while self._waiters:
            # An outage only delays change notification; the waiters' own reads report it.
            with contextlib.suppress(StoreUnavailable):
                self._observed(await self._call(lambda r: r.get(self._key("version"))))
            await asyncio.sleep(POLL_INTERVAL_S)

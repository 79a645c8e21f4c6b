"""Change notification: the state version and a wait for it to move."""

from __future__ import annotations

import asyncio

from lb_service.store.memory.core import MemoryCore


class ChangeFeed(MemoryCore):
    """Change notification: the state version and a wait for it to move."""

    async def wait_for_change(self, seen_version: int) -> int:
        """Wait until the state version differs from ``seen_version``; return the new one."""
        while self._version == seen_version:
            if self._changed.is_set():
                # The change it signalled has been seen: arm a fresh event to wait on.
                self._changed = asyncio.Event()
            await self._changed.wait()
        return self._version

    def version(self) -> int:
        """The state version; it changes whenever the registry, weights, strategy or a load does."""
        return self._version

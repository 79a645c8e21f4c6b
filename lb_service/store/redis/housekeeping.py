"""Housekeeping on the Redis store: ejections that are over, idle sessions, forgotten ids.

Leases that are overdue are closed by ``Leases.expire_leases``.
"""

from __future__ import annotations

from lb_service.store.redis.core import RedisCore


class Housekeeping(RedisCore):
    """The sweeper's operations besides expiring leases (one script each)."""

    async def expire_ejections(self, now_ms: int) -> list[str]:
        """Bring back agents whose ejection is over; returns their ids (changes the version)."""
        reply = await self._eval("expire_ejections", [now_ms])
        self._observed(reply[0])
        back = [(int(reply[i + 1]), reply[i]) for i in range(1, len(reply), 2)]
        for _, agent_id in back:
            self._ejections.pop(agent_id, None)
        # Hash order is arbitrary: report them in the order their ejections ended.
        return [agent_id for _, agent_id in sorted(back)]

    async def expire_sessions(self, idle_since_ms: int) -> int:
        """Drop bindings not used since the cutoff; returns how many."""
        return int(await self._eval("expire_sessions", [idle_since_ms]))

    async def forget_idle(self, idle_since_ms: int, keep: int) -> int:
        """Forget the load history of ids neither registered nor holding a lease.

        An id goes when unused (picked, started or ended) since the cutoff, or when more
        than ``keep`` such ids remain (least recently used first). Its selections stay
        counted under the empty id in ``selections_by_agent``. Returns how many went.
        """
        gone, version = await self._eval("forget_idle", [idle_since_ms, keep])
        self._observed(version)
        return int(gone)

"""What the sweep expires and forgets: overdue leases, ejections, sessions, histories."""

from __future__ import annotations

from lb_service.store.base import AgentStats, Lease
from lb_service.store.feedback import Feedback, close_lease, fold_expiry
from lb_service.store.memory.core import MemoryCore


class Housekeeping(MemoryCore):
    """What the sweep expires and forgets: overdue leases, ejections, sessions, histories."""

    async def expire_leases(
        self, started_before_ms: int, now_ms: int, feedback: Feedback
    ) -> list[Lease]:
        """Close leases started before the cutoff as failed requests; returns them.

        Pending picks whose hold has ended by ``now_ms`` end too.

        Each counts as a failed request of its agent, but as lateness, not an agent
        failure: no latency sample, no outlier ejection (``feedback.close_lease``).
        """
        self._end_pending(now_ms)
        expired = []
        while self._leases:
            lease = next(iter(self._leases.values()))
            if lease.started_at_ms >= started_before_ms:
                break
            self._close(lease.request_id)
            stats = close_lease(self._stats.get(lease.agent_id, AgentStats()), now_ms)
            self._stats[lease.agent_id] = fold_expiry(stats)
            self._index.load_changed(lease.agent_id)
            expired.append(lease)
        if expired:
            self._bump()
        return expired

    async def expire_ejections(self, now_ms: int) -> list[str]:
        """Bring back agents whose ejection is over; returns their ids (changes the version)."""
        back = [i for i, until in self._ejections.items() if until <= now_ms]
        for agent_id in back:
            del self._ejections[agent_id]
        if back:
            self._bump()
        return back

    async def expire_sessions(self, idle_since_ms: int) -> int:
        """Drop bindings not used since the cutoff; returns how many."""
        stale = [s for s, b in self._bindings.items() if b.last_used_ms < idle_since_ms]
        for session_id in stale:
            del self._bindings[session_id]
        return len(stale)

    async def forget_idle(self, idle_since_ms: int, keep: int) -> int:
        """Forget the load history of ids neither registered nor holding a lease.

        An id goes when unused (picked, started or ended) since the cutoff, or when more
        than ``keep`` such ids remain (least recently used first). Its selections stay
        counted under the empty id in ``selections_by_agent``. Returns how many went.
        """
        seen = self._last_seen
        idle = sorted(
            (i for i in self._stats if i not in self._agents and i not in self._agent_leases),
            key=lambda agent_id: seen.get(agent_id, 0),
            reverse=True,
        )
        gone = [i for n, i in enumerate(idle) if n >= keep or seen.get(i, 0) < idle_since_ms]
        for agent_id in gone:
            del self._stats[agent_id]
            seen.pop(agent_id, None)
            self._pending.forget(agent_id)
            # Kept under "" (never a valid id) so selections_by_agent still sums to the total.
            selections = self._selections_by_agent.pop(agent_id, 0)
            if selections:
                self._selections_by_agent[""] += selections
        if gone:
            self._bump()
        return len(gone)

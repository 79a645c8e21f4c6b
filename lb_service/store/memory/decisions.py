"""Selections: the snapshot a decision reads, and its commit."""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.store.base import AgentStats, Binding, Committed, Limit, Pick, PickState
from lb_service.store.memory.core import MemoryCore


class Decisions(MemoryCore):
    """Selections: the snapshot a decision reads, and its commit."""

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """Snapshot what a selection needs; the views are live but nothing runs in between."""
        return PickState(
            strategy=self._strategy,
            agents=self._agents_view,
            stats=self._stats_view,
            weights=self._weights_view,
            binding=self._bindings.get(session_id) if session_id else None,
            sequence=self._sequence,
            session_count=len(self._bindings),
            lease_count=len(self._leases),
            ejections=self._ejections_view,
            pool=self._index.pool,
            out=self._health.out,
            reports=self._reports_view,
            reports_newest_ms=self._reports_newest,
        )

    async def commit_pick(self, pick: Pick) -> Committed | Limit | None:
        """Record a selection (opening a lease when acquiring), within the pick's limits.

        Nothing runs between ``pick_state`` and this call, so the chosen agent is still
        the best of its contenders: they are ignored and the result is never None.
        """
        if pick.acquire and 0 < pick.max_leases <= len(self._leases):
            return Limit.LEASES
        if (
            pick.session_id
            and pick.bind
            and pick.session_id not in self._bindings
            and 0 < pick.max_sessions <= len(self._bindings)
        ):
            return Limit.SESSIONS
        self._end_pending(pick.now_ms)
        self._sequence += 1
        self._total_selections += 1
        self._selections_by_agent[pick.agent_id] += 1
        if pick.agent_id not in self._stats:  # a candidate seen for the first time
            self._stats[pick.agent_id] = AgentStats()
        self._last_seen[pick.agent_id] = pick.now_ms
        if pick.session_id:
            bound = self._bindings.get(pick.session_id)
            if pick.bind or (bound is not None and bound.agent_id == pick.agent_id):
                self._bindings[pick.session_id] = Binding(pick.agent_id, pick.now_ms)
        if pick.acquire:
            return Committed(pick.agent_id, self._open(pick.agent_id, pick.now_ms, pick.model))
        if pick.hold_until_ms > pick.now_ms:
            self._pending.hold(pick.agent_id, pick.hold_until_ms)
            self._add_pending(pick.agent_id, 1)
        self._bump()
        return Committed(pick.agent_id)

    async def record_failed_selection(self) -> None:
        """Count a selection that found no agent."""
        self._failed_selections += 1

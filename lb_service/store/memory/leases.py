"""Leases opened and requests ended, booked and folded into the estimates."""

from __future__ import annotations

from lb_service.store.base import EndOutcome, EndResult, Limit, RequestEnd, UnknownAgent
from lb_service.store.feedback import end_result
from lb_service.store.memory.core import MemoryCore


class Leases(MemoryCore):
    """Leases opened and requests ended, booked and folded into the estimates."""

    async def open_lease(
        self,
        agent_id: str,
        now_ms: int,
        max_leases: int = 0,
        *,
        only_known: bool = False,
        model: str = "",
    ) -> str | Limit | UnknownAgent:
        """Record a request start on the agent, for ``model``; returns the new lease's request_id.

        With ``only_known`` an id neither registered nor holding a load record returns
        ``UnknownAgent``; else with ``max_leases`` (0 = no limit) leases open it returns
        ``Limit.LEASES``.
        """
        if only_known and not self._knows(agent_id):
            return UnknownAgent(agent_id)
        if 0 < max_leases <= len(self._leases):
            return Limit.LEASES
        self._end_pending(now_ms)
        if self._pending.confirm(agent_id):
            self._add_pending(agent_id, -1)
        return self._open(agent_id, now_ms, model)

    async def end_request(self, end: RequestEnd) -> EndResult:
        """Record a request end (see EndOutcome); changes nothing unless it succeeds."""
        if end.request_id:
            lease = self._leases.get(end.request_id)
            if lease is None:
                issued = self._was_issued(end.request_id)
                return EndResult(EndOutcome.ALREADY_ENDED if issued else EndOutcome.UNKNOWN_REQUEST)
            if end.agent_id and end.agent_id != lease.agent_id:
                return EndResult(EndOutcome.WRONG_AGENT, lease.agent_id)
            request_id, agent_id, model = end.request_id, lease.agent_id, lease.model
            # Leases open on the agent are in the order they opened.
            overtook = list(self._agent_leases[agent_id]).index(request_id)
        else:
            model, overtook = "", 0
            agent_id = end.agent_id
            if end.only_known and not self._knows(agent_id):
                return EndResult(EndOutcome.UNKNOWN_AGENT)
            request_id = next(iter(self._agent_leases.get(agent_id, ())), "")
            if request_id:
                model = self._leases[request_id].model
        if request_id:
            self._close(request_id)
        before, after = self._observe(
            agent_id,
            end.latency_ms,
            end.failed,
            end.now_ms,
            end.feedback,
            bool(request_id),
            model,
            overtook,
        )
        self._last_seen[agent_id] = end.now_ms
        self._latency_sum_ms += end.latency_ms
        self._latency_samples += 1
        self._bump()
        outcome = EndOutcome.CLOSED if request_id else EndOutcome.NO_OPEN_LEASE
        return end_result(outcome, agent_id, before, after, end.now_ms)

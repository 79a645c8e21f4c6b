"""Agents' load reports in memory: the freshest per registered agent."""

from __future__ import annotations

from lb_service.model import LoadReport
from lb_service.reports import ReceivedReport
from lb_service.store.memory.core import MemoryCore


class Reports(MemoryCore):
    """``put_report``: the report, its time and the agent's open leases, in one step."""

    async def put_report(self, agent_id: str, report: LoadReport, now_ms: int) -> bool:
        """Keep the agent's freshest report; False (nothing kept) for an unregistered agent."""
        if agent_id not in self._agents:
            return False
        stats = self._stats.get(agent_id)
        leases = 0 if stats is None else stats.active
        self._reports[agent_id] = ReceivedReport(report, now_ms, leases)
        self._reports_newest = max(self._reports_newest, now_ms)
        self._bump()
        return True

"""Agents' load reports on the Redis store: one script keeps each, with its open leases."""

from __future__ import annotations

from lb_service.model import LoadReport
from lb_service.store.redis.core import RedisCore
from lb_service.store.redis.records import encode_report


class Reports(RedisCore):
    """``put_report``: one round trip, atomic with the agent's lease count."""

    async def put_report(self, agent_id: str, report: LoadReport, now_ms: int) -> bool:
        """Keep the agent's freshest report; False (nothing kept) for an unregistered agent."""
        version = await self._eval("put_report", [agent_id, now_ms, encode_report(report)])
        if version is None:
            return False
        self._observed(version)
        return True

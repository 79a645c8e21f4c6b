"""Health records, written compare-and-set, and probe claims."""

from __future__ import annotations

from collections.abc import Mapping

from lb_service.health.state import HealthRecord
from lb_service.store.base import HealthWrite
from lb_service.store.memory.core import MemoryCore


class HealthRecords(MemoryCore):
    """Health records, written compare-and-set, and probe claims."""

    async def health(self) -> Mapping[str, HealthRecord]:
        """Health records of the registered agents that have one (a live view)."""
        return self._health.records()

    async def health_of(self, agent_id: str) -> HealthRecord | None:
        """One agent's health record, or None."""
        return self._health.get(agent_id)

    async def put_health(
        self, agent_id: str, record: HealthRecord, expected: HealthRecord | None
    ) -> HealthWrite:
        """Replace the agent's record if still ``expected``; a health change moves the version."""
        outcome, changed = self._health.put(
            agent_id, record, expected, registered=agent_id in self._agents
        )
        if changed:
            self._bump()
        return outcome

    async def claim_probe(self, agent_id: str, now_ms: int, hold_ms: int) -> bool:
        """Claim the agent's next probe for ``hold_ms`` (one process: always the claimant)."""
        return self._health.claim(agent_id, now_ms, hold_ms)

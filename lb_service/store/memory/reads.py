"""Read-only views: records, counts, leases, counters and the overview."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lb_service.store.base import AgentStats, Counters, Lease, Overview
from lb_service.store.memory.core import MemoryCore


class Reads(MemoryCore):
    """Read-only views: records, counts, leases, counters and the overview."""

    async def stats(self) -> Mapping[str, AgentStats]:
        """Load history of every agent id ever seen, registered or candidate."""
        return self._stats_view

    async def session_count(self) -> int:
        """Sticky-session bindings held."""
        return len(self._bindings)

    async def lease_count(self) -> int:
        """Leases open (what the max_leases limit counts)."""
        return len(self._leases)

    async def leases(self) -> Mapping[str, Lease]:
        """Every open lease by request_id (read-only)."""
        return MappingProxyType(self._leases)

    async def counters(self) -> Counters:
        """Service-wide counters."""
        return Counters(
            total_selections=self._total_selections,
            failed_selections=self._failed_selections,
            total_requests=self._issued,
            latency_sum_ms=self._latency_sum_ms,
            latency_samples=self._latency_samples,
            selections_by_agent=dict(self._selections_by_agent),
        )

    async def overview(self) -> Overview:
        """Strategy, registry, weights, every load record and the counters (live views)."""
        return Overview(
            strategy=self._strategy,
            agents=self._agents_view,
            weights=self._weights_view,
            stats=self._stats_view,
            counters=await self.counters(),
            health=self._health.records(),
            reports=self._reports_view,
        )

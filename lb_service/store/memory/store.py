"""``MemoryStore``: every group of the memory store's operations, as one ``Store``."""

from __future__ import annotations

from lb_service.health.state import HealthRecord
from lb_service.store.base import AgentStats
from lb_service.store.memory.decisions import Decisions
from lb_service.store.memory.feed import ChangeFeed
from lb_service.store.memory.health import HealthRecords
from lb_service.store.memory.housekeeping import Housekeeping
from lb_service.store.memory.leases import Leases
from lb_service.store.memory.reads import Reads
from lb_service.store.memory.registry import Registry
from lb_service.store.memory.reports import Reports
from lb_service.store.snapshot import StoreState


class MemoryStore(
    Registry, Decisions, Leases, Housekeeping, HealthRecords, Reports, Reads, ChangeFeed
):
    """State of one balancer process, held in memory (lost when the process exits).

    Request ids are ``<epoch>-<n>``: ``epoch`` is random per store and ``n`` counts up,
    so "was this id ever issued?" is answered without remembering every closed lease.
    """

    async def check(self) -> None:
        """Memory always answers."""

    async def close(self) -> None:
        """Memory holds nothing to release."""

    # Snapshots (not part of the Store protocol: a shared store persists on its own side).
    def export_state(self) -> StoreState:
        """Copy the registry, weight overrides, strategy and session bindings."""
        return StoreState(
            strategy=self._strategy,
            agents=tuple(self._agents.values()),
            weights=dict(self._weights),
            bindings=dict(self._bindings),
            drained=tuple(i for i, record in self._health.records().items() if record.drained),
        )

    def import_state(self, state: StoreState) -> None:
        """Replace the registry, weights, strategy and bindings with a snapshot's.

        Loads, leases and counters are not part of a snapshot and are left as they are
        (empty at start-up, when a snapshot is restored).
        """
        self._strategy = state.strategy
        # In place: the index and the read-only views handed to picks are over these dicts.
        self._agents.clear()
        self._agents.update((agent.id, agent) for agent in state.agents)
        for agent_id in self._agents:
            self._stats.setdefault(agent_id, AgentStats())
        self._weights.clear()
        self._weights.update(state.weights)
        self._bindings = dict(state.bindings)
        self._health.restore({i: HealthRecord(drained=True) for i in state.drained})
        self._index.registry_changed()
        self._bump()

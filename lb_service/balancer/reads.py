"""Reads of the fleet's state: loads, statistics and the paced WatchLoads stream."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Iterable, Mapping
from typing import Protocol

from lb_service.balancer.events import Clock
from lb_service.balancer.options import BalancerConfig
from lb_service.capacity import learned_capacity, ranked_slots
from lb_service.errors import AgentNotFound
from lb_service.health.state import HEALTHY_RECORD, HealthRecord
from lb_service.model import Agent, AgentLoad, LoadSnapshot, Statistics
from lb_service.reports import ReceivedReport
from lb_service.store.base import AgentStats
from lb_service.store.feedback import is_ejected
from lb_service.store.roles import ChangeFeed, Reads
from lb_service.validation import check_ids


class Source(Reads, ChangeFeed, Protocol):
    """The store's roles the reads use: its read-only views and its change feed."""


class LoadReads:
    """Loads, statistics and watched snapshots, read from the store."""

    def __init__(self, store: Source, config: BalancerConfig, clock: Clock) -> None:
        """Read through ``store`` at ``clock``'s time, paced by ``config``'s watch interval."""
        self._store = store
        self._config = config
        self._clock = clock
        # The last snapshot read for a watcher, by (agent ids, store version).
        self._last_snapshot: tuple[tuple[tuple[str, ...], int], LoadSnapshot] | None = None

    async def loads(self, agent_ids: Iterable[str] = ()) -> list[AgentLoad]:
        """Loads of the given agents, or of every registered agent when none are given."""
        ids = check_ids(agent_ids)
        overview = await self._store.overview()
        agents, stats, weights = overview.agents, overview.stats, overview.weights
        health = overview.health
        if not ids:
            ids = tuple(agents)
        for agent_id in ids:
            if agent_id not in agents and agent_id not in stats:
                raise AgentNotFound(agent_id)
        now = self._clock()
        reports = overview.reports
        return [
            _load(
                agent_id,
                agents,
                stats,
                weights,
                now,
                health.get(agent_id, HEALTHY_RECORD),
                reports.get(agent_id),
            )
            for agent_id in ids
        ]

    async def statistics(self) -> Statistics:
        """Service-wide counters and the current strategy."""
        overview = await self._store.overview()
        counters, stats = overview.counters, overview.stats
        return Statistics(
            strategy=overview.strategy,
            total_selections=counters.total_selections,
            failed_selections=counters.failed_selections,
            total_requests=counters.total_requests,
            active_connections=sum(s.active for s in stats.values()),
            avg_latency_ms=counters.latency_sum_ms / counters.latency_samples
            if counters.latency_samples
            else 0.0,
            selections_by_agent=counters.selections_by_agent,
        )

    async def watch(
        self, agent_ids: Iterable[str] = (), min_interval_s: float = 0.0
    ) -> AsyncGenerator[LoadSnapshot, None]:
        """Yield a full snapshot at once, then one whenever it changes, paced by the interval.

        Changes between two updates are coalesced into the next snapshot, so a slow
        reader holds at most one pending snapshot, never a queue. Unknown ids fail
        before the first snapshot.
        """
        interval = max(min_interval_s, self._config.watch_min_interval_ms / 1000)
        ids = check_ids(agent_ids)
        loop = asyncio.get_running_loop()
        version = self._store.version()
        last = await self._snapshot(ids, version)
        read_at = loop.time()
        yield last
        while True:
            version = await self._store.wait_for_change(version)
            # Wait out the rest of the interval, then read once: every change made
            # meanwhile lands in this one snapshot. The pace is kept from the last read,
            # not the last update, so changes that leave the loads as they were (a pick
            # without acquire) cost one read per interval, not one per change. Reads fall
            # on multiples of the interval, so watchers with the same pace wake together
            # and share one read.
            wake_at = math.ceil((read_at + interval) / interval) * interval
            await asyncio.sleep(max(0.0, wake_at - loop.time()))
            version = self._store.version()
            current = await self._snapshot(ids, version)
            read_at = loop.time()
            if current.loads != last.loads:
                last = current
                yield current

    async def _snapshot(self, ids: tuple[str, ...], version: int) -> LoadSnapshot:
        """The loads of ``ids`` now; watchers reading at the same version share one read."""
        shared = self._last_snapshot
        if shared is not None and shared[0] == (ids, version):
            return shared[1]
        snapshot = LoadSnapshot(tuple(await self.loads(ids)), self._clock())
        self._last_snapshot = ((ids, version), snapshot)
        return snapshot


def _load(
    agent_id: str,
    agents: Mapping[str, Agent],
    stats: Mapping[str, AgentStats],
    weights: Mapping[str, float],
    now: int,
    health: HealthRecord,
    received: ReceivedReport | None,
) -> AgentLoad:
    record = stats.get(agent_id, AgentStats())
    agent = agents.get(agent_id)
    learned = learned_capacity(record)
    # An unregistered candidate has no hardware on record, so its default weight is 1.
    default = agent.default_weight if agent is not None else 1.0
    return AgentLoad(
        agent_id=agent_id,
        active_connections=record.active,
        avg_latency_ms=record.avg_latency_ms or 0.0,
        last_request_at_ms=record.last_request_at_ms,
        total_requests=record.total_requests,
        failed_requests=record.failed_requests,
        weight=weights.get(agent_id, default),
        ejected_until_ms=record.ejected_until_ms if is_ejected(record, now) else 0,
        capacity_rps=learned or 0.0,
        # An id that is only a candidate has no registration: its record's figure.
        parallel_slots=record.slots
        if agent is None
        else ranked_slots(agent, record, learned is not None),
        health=health.health,
        health_reason=health.reason,
        report=None if received is None else received.report,
        report_age_ms=0 if received is None else received.age_ms(now),
    )

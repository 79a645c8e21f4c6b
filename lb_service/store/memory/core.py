"""The memory store's state and the steps its operations share."""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, OrderedDict
from types import MappingProxyType

from lb_service.model import Agent, StrategyName
from lb_service.model_cost import lesson
from lb_service.reports import ReceivedReport
from lb_service.store.base import AgentStats, Binding, Lease, with_pending
from lb_service.store.feedback import Feedback, close_lease, fold_end, is_ejected, open_lease
from lb_service.store.health import HealthTable
from lb_service.store.index import AgentIndex
from lb_service.store.pending import PendingPicks


class MemoryCore:
    """The state of one balancer process, held in memory, and the steps its operations share.

    Every group of operations (``registry``, ``decisions``, ``leases``, ...) works on
    these dicts; none suspends mid-update, which is what makes each one atomic.
    """

    def __init__(
        self, strategy: StrategyName = StrategyName.LEAST_CONNECTIONS, epoch: str | None = None
    ) -> None:
        """Start empty with the given strategy; ``epoch`` fixes request ids for tests."""
        self._strategy = strategy
        self._epoch = epoch if epoch is not None else secrets.token_hex(4)
        self._agents: dict[str, Agent] = {}
        self._weights: dict[str, float] = {}
        self._stats: dict[str, AgentStats] = {}
        # When each id in _stats was last picked, started or ended: the history of ids
        # that are neither registered nor leased is forgotten by recency (forget_idle).
        self._last_seen: dict[str, int] = {}
        self._bindings: dict[str, Binding] = {}
        # Leases in start order, so expiry only ever looks at the oldest ones.
        self._leases: OrderedDict[str, Lease] = OrderedDict()
        # Per agent, open request ids in start order: an end without an id closes the oldest.
        self._agent_leases: dict[str, OrderedDict[str, None]] = {}
        self._issued = 0
        self._sequence = 0
        self._total_selections = 0
        self._failed_selections = 0
        self._latency_sum_ms = 0.0
        self._latency_samples = 0
        self._selections_by_agent: Counter[str] = Counter()
        # Agents ejected now (until when); kept apart so a pick need not scan the stats.
        self._ejections: dict[str, int] = {}
        self._ejections_view = MappingProxyType(self._ejections)
        # Read-only views of the registry, weights and loads, made once: every pick's
        # snapshot hands them out (the dicts are only ever changed in place).
        self._agents_view = MappingProxyType(self._agents)
        self._weights_view = MappingProxyType(self._weights)
        self._stats_view = MappingProxyType(self._stats)
        self._version = 0
        self._changed = asyncio.Event()
        self._index = AgentIndex(self._agents, self._stats, self._weights)
        self._pending = PendingPicks()
        self._health = HealthTable()
        # Each registered agent's freshest load report (lb_service.reports).
        self._reports: dict[str, ReceivedReport] = {}
        self._reports_view = MappingProxyType(self._reports)
        self._reports_newest = 0

    # Steps the operations share.
    def _end_pending(self, now_ms: int) -> None:
        """End the pending picks whose hold is over."""
        for agent_id, count in self._pending.expire(now_ms).items():
            self._add_pending(agent_id, -count)

    def _add_pending(self, agent_id: str, change: int) -> None:
        stats = self._stats.get(agent_id)
        if stats is not None:
            self._stats[agent_id] = with_pending(stats, max(stats.pending + change, 0))
            self._index.load_changed(agent_id)

    def _open(self, agent_id: str, now_ms: int, model: str = "") -> str:
        self._issued += 1
        request_id = f"{self._epoch}-{self._issued}"
        stats = self._stats.get(agent_id, AgentStats())
        self._leases[request_id] = Lease(request_id, agent_id, now_ms, lesson(stats, model))
        self._agent_leases.setdefault(agent_id, OrderedDict())[request_id] = None
        self._last_seen[agent_id] = now_ms
        self._stats[agent_id] = open_lease(stats, now_ms)
        self._index.load_changed(agent_id)
        self._bump()
        return request_id

    def _observe(
        self,
        agent_id: str,
        latency_ms: float,
        failed: bool,
        now_ms: int,
        feedback: Feedback,
        closes_lease: bool,
        model: str | None = "",
        overtook: int = 0,
    ) -> tuple[AgentStats, AgentStats]:
        """Fold the end into the agent's record; return the record before and after."""
        stats = before = self._stats.get(agent_id, AgentStats())
        if closes_lease:
            stats = close_lease(stats, now_ms)
        # The ejection share is of the registered agents; a candidate-only deployment
        # has none registered, so there it is of every id the store knows.
        population = len(self._agents) if agent_id in self._agents else len(self._stats)
        ejected_now = sum(until > now_ms for until in self._ejections.values())
        updated = fold_end(
            stats,
            closes_lease,
            latency_ms,
            failed,
            now_ms,
            feedback,
            ejected_now,
            population,
            model,
            overtook,
        )
        self._stats[agent_id] = updated
        self._index.load_changed(agent_id)
        if is_ejected(updated, now_ms):
            self._ejections[agent_id] = updated.ejected_until_ms
        return before, updated

    def _close(self, request_id: str) -> None:
        lease = self._leases.pop(request_id)
        open_ids = self._agent_leases[lease.agent_id]
        del open_ids[request_id]
        if not open_ids:
            del self._agent_leases[lease.agent_id]

    def _knows(self, agent_id: str) -> bool:
        # Registered, or seen before (a candidate that was picked or started).
        return agent_id in self._agents or agent_id in self._stats

    def _was_issued(self, request_id: str) -> bool:
        epoch, _, number = request_id.rpartition("-")
        # Only the exact text we issue counts: plain ASCII digits without a leading zero
        # (int() would also take "01" or non-ASCII digits). The length cap keeps int()
        # away from huge digit strings.
        return (
            epoch == self._epoch
            and 0 < len(number) <= 20
            and number.isascii()
            and number.isdigit()
            and not number.startswith("0")
            and int(number) <= self._issued
        )

    def _bump(self) -> None:
        # Wake every watcher once. The next watcher to wait arms a fresh event, not
        # this method: most changes (every pick) happen with nobody waiting.
        self._version += 1
        self._changed.set()

"""The in-process store: plain dicts, atomic because no method suspends mid-update.

Its registry, weights, strategy and sessions can be exported and imported
(``export_state``/``import_state``) so that ``store.snapshot`` can keep them in a file.
It keeps an index of its registry for picking (``store.index``), told of every change
here, and hands it out with each ``pick_state``.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from lb_service.capacity import accrue, parallel_slots
from lb_service.health.state import HealthRecord
from lb_service.model import Agent, StrategyName
from lb_service.store.base import (
    AgentStats,
    Binding,
    Committed,
    Configuration,
    Counters,
    EndOutcome,
    EndResult,
    HealthWrite,
    Lease,
    Limit,
    Overview,
    Pick,
    PickState,
    Registered,
    RequestEnd,
    UnknownAgent,
    with_pending,
)
from lb_service.store.feedback import (
    Feedback,
    close_lease,
    end_result,
    fold_end,
    fold_expiry,
    is_ejected,
    open_lease,
)
from lb_service.store.health import HealthTable
from lb_service.store.index import AgentIndex
from lb_service.store.pending import PendingPicks
from lb_service.store.snapshot import StoreState


class MemoryStore:
    """State of one balancer process, held in memory (lost when the process exits).

    Request ids are ``<epoch>-<n>``: ``epoch`` is random per store and ``n`` counts up,
    so "was this id ever issued?" is answered without remembering every closed lease.
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
        self._version = 0
        self._changed = asyncio.Event()
        self._index = AgentIndex(self._agents, self._stats, self._weights)
        self._pending = PendingPicks()
        self._health = HealthTable()

    # Registry, weights and strategy.
    async def put_agent(self, agent: Agent, now_ms: int, max_agents: int = 0) -> Registered | Limit:
        """Add or replace an agent, keeping its position, history and weight override.

        An agent not registered until now is stamped ``joined_ms = now_ms`` (slow start).
        A new id when ``max_agents`` (0 = no limit) are registered returns ``Limit.AGENTS``.
        """
        known = self._agents.get(agent.id)
        if known is None and 0 < max_agents <= len(self._agents):
            return Limit.AGENTS
        stats = self._stats.get(agent.id, AgentStats())
        if agent.id not in self._agents:
            stats = replace(stats, joined_ms=now_ms)
        slots = parallel_slots(agent)
        if stats.slots != slots:
            # Busy time so far counts against the old slot count.
            stats = replace(accrue(stats, now_ms), slots=slots)
        self._stats[agent.id] = stats
        if self._agents.get(agent.id) != agent:
            self._index.registry_changed()
        self._agents[agent.id] = agent
        self._bump()
        if known is None:
            return Registered.ADDED
        return Registered.UNCHANGED if known == agent else Registered.CHANGED

    async def delete_agent(self, agent_id: str) -> bool:
        """Remove an agent and its weight override; False if it was not registered."""
        if self._agents.pop(agent_id, None) is None:
            return False
        self._weights.pop(agent_id, None)
        self._health.forget(agent_id)
        self._index.registry_changed()
        self._bump()
        return True

    async def agents(self) -> Mapping[str, Agent]:
        """Registered agents by id, in registration order."""
        return MappingProxyType(self._agents)

    async def weights(self) -> Mapping[str, float]:
        """Weight overrides by agent id."""
        return MappingProxyType(self._weights)

    async def set_weights(
        self, weights: Mapping[str, float], *, only_registered: bool = False
    ) -> Configuration | UnknownAgent:
        """Apply all the overrides at once; returns the registry and overrides after it.

        With ``only_registered`` an id not registered changes nothing and is returned as
        ``UnknownAgent``. No overrides change nothing.
        """
        if only_registered:
            for agent_id in weights:
                if agent_id not in self._agents:
                    return UnknownAgent(agent_id)
        if weights:
            self._weights.update(weights)
            self._index.weights_changed()
            self._bump()
        return Configuration(MappingProxyType(self._agents), MappingProxyType(self._weights))

    async def clear_weights(self, agent_ids: Iterable[str]) -> None:
        """Drop the overrides of these agents."""
        for agent_id in agent_ids:
            self._weights.pop(agent_id, None)
        self._index.weights_changed()
        self._bump()

    async def strategy(self) -> StrategyName:
        """The current strategy."""
        return self._strategy

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        """Switch strategy; returns the one replaced."""
        previous, self._strategy = self._strategy, strategy
        self._bump()
        return previous

    # Selection.
    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """Snapshot what a selection needs; the views are live but nothing runs in between."""
        return PickState(
            strategy=self._strategy,
            agents=MappingProxyType(self._agents),
            stats=MappingProxyType(self._stats),
            weights=MappingProxyType(self._weights),
            binding=self._bindings.get(session_id) if session_id else None,
            sequence=self._sequence,
            session_count=len(self._bindings),
            lease_count=len(self._leases),
            ejections=self._ejections_view,
            pool=self._index.pool,
            out=self._health.out,
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

    # Requests and leases.
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
        else:
            model = ""
            agent_id = end.agent_id
            if end.only_known and not self._knows(agent_id):
                return EndResult(EndOutcome.UNKNOWN_AGENT)
            request_id = next(iter(self._agent_leases.get(agent_id, ())), "")
            if request_id:
                model = self._leases[request_id].model
        if request_id:
            self._close(request_id)
        before, after = self._observe(
            agent_id, end.latency_ms, end.failed, end.now_ms, end.feedback, bool(request_id), model
        )
        self._last_seen[agent_id] = end.now_ms
        self._latency_sum_ms += end.latency_ms
        self._latency_samples += 1
        self._bump()
        outcome = EndOutcome.CLOSED if request_id else EndOutcome.NO_OPEN_LEASE
        return end_result(outcome, agent_id, before, after, end.now_ms)

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

    # Health.
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

    # Reads and change notification.
    async def stats(self) -> Mapping[str, AgentStats]:
        """Load history of every agent id ever seen, registered or candidate."""
        return MappingProxyType(self._stats)

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
            agents=MappingProxyType(self._agents),
            weights=MappingProxyType(self._weights),
            stats=MappingProxyType(self._stats),
            counters=await self.counters(),
            health=self._health.records(),
        )

    async def wait_for_change(self, seen_version: int) -> int:
        """Wait until the state version differs from ``seen_version``; return the new one."""
        while self._version == seen_version:
            if self._changed.is_set():
                # The change it signalled has been seen: arm a fresh event to wait on.
                self._changed = asyncio.Event()
            await self._changed.wait()
        return self._version

    def version(self) -> int:
        """The state version; it changes whenever the registry, weights, strategy or a load does."""
        return self._version

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
        self._agents = {agent.id: agent for agent in state.agents}
        for agent_id in self._agents:
            self._stats.setdefault(agent_id, AgentStats())
        self._weights = dict(state.weights)
        self._bindings = dict(state.bindings)
        self._health.restore({i: HealthRecord(drained=True) for i in state.drained})
        self._index = AgentIndex(self._agents, self._stats, self._weights)
        self._bump()

    # Internals.
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
        self._leases[request_id] = Lease(request_id, agent_id, now_ms, model)
        self._agent_leases.setdefault(agent_id, OrderedDict())[request_id] = None
        self._last_seen[agent_id] = now_ms
        self._stats[agent_id] = open_lease(self._stats.get(agent_id, AgentStats()), now_ms)
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
        model: str = "",
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

"""The LoadBalancer: requirements, stickiness and leases around a pluggable strategy.

A selection reads one snapshot from the store, filters the agents by the task, honours
the session's binding, lets the strategy choose among the agents with spare capacity,
and commits the decision (and, with ``acquire``, the request's start) in one store call.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from lb_service.errors import (
    AgentNotFound,
    AllAgentsBusy,
    InvalidArgument,
    LeaseNotFound,
    NoAgentAvailable,
    NoAgentsRegistered,
    NoEligibleAgent,
)
from lb_service.model import (
    Agent,
    AgentLoad,
    LoadSnapshot,
    Selection,
    Statistics,
    StrategyName,
    Task,
)
from lb_service.requirements import eligible
from lb_service.store.base import AgentStats, EndOutcome, Pick, PickState, RequestEnd, Store
from lb_service.strategies import STRATEGIES, Candidate, PickContext
from lb_service.validation import (
    check_agent,
    check_candidates,
    check_ids,
    check_task,
    check_weights,
    require_amount,
    require_id,
)

#: Returns the current time as unix milliseconds.
Clock = Callable[[], int]


def system_clock() -> int:
    """Wall-clock time in unix milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """Behaviour options of the balancer, with the documented defaults."""

    #: Route requests with a session_id to the agent the session is bound to.
    sticky_sessions: bool = True
    #: A binding unused for this long is forgotten.
    session_ttl_s: float = 30 * 60
    #: A lease not ended within this time expires and counts as a failed request.
    request_timeout_s: float = 10 * 60
    #: Weight of a new latency sample in the moving average (1 = only the last sample).
    latency_smoothing: float = 0.3
    #: Least time between two WatchLoads updates; also the default interval.
    watch_min_interval_s: float = 0.1

    def __post_init__(self) -> None:
        """Reject values the balancer cannot work with."""
        for name in ("session_ttl_s", "request_timeout_s", "watch_min_interval_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not 0 < self.latency_smoothing <= 1:
            raise ValueError(f"latency_smoothing must be in (0, 1], got {self.latency_smoothing!r}")


class Outcome(enum.Enum):
    """How a selection ended, as observers see it."""

    SELECTED = "selected"
    STICKY = "sticky"
    NO_AGENTS = "no_agents"
    NO_ELIGIBLE_AGENT = "no_eligible_agent"
    ALL_BUSY = "all_busy"


_REFUSALS: tuple[tuple[type[NoAgentAvailable], Outcome], ...] = (
    (NoAgentsRegistered, Outcome.NO_AGENTS),
    (AllAgentsBusy, Outcome.ALL_BUSY),
    (NoAgentAvailable, Outcome.NO_ELIGIBLE_AGENT),
)


class Observer(Protocol):
    """Receives events worth counting (metrics), without the core knowing who listens."""

    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        """A selection ended with this outcome under this strategy."""

    def leases_expired(self, count: int) -> None:
        """The sweep expired this many leases."""


class _NoObserver:
    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        pass

    def leases_expired(self, count: int) -> None:
        pass


class LoadBalancer:
    """Picks agents and tracks their load; every piece of state lives in the store."""

    def __init__(
        self,
        store: Store,
        config: BalancerConfig | None = None,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        observer: Observer | None = None,
    ) -> None:
        """Build a balancer over ``store``; inject ``clock`` and ``rng`` for exact tests."""
        self._store = store
        self._config = config or BalancerConfig()
        self._clock = clock
        self._rng = rng or random.Random()
        self.observer: Observer = observer or _NoObserver()

    @property
    def config(self) -> BalancerConfig:
        """The options this balancer runs with."""
        return self._config

    # Registry and configuration.
    async def register(self, agent: Agent) -> None:
        """Add or replace an agent; its load history survives a re-register."""
        await self._store.put_agent(check_agent(agent))

    async def deregister(self, agent_id: str) -> None:
        """Remove an agent; its sessions move on their next request."""
        if not await self._store.delete_agent(require_id(agent_id)):
            raise AgentNotFound(agent_id)

    async def agents(self) -> list[Agent]:
        """Every registered agent, in registration order."""
        return list((await self._store.agents()).values())

    async def update_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Override weights all or nothing; return every agent's effective weight."""
        check_weights(weights)
        agents = await self._store.agents()
        for agent_id in weights:
            if agent_id not in agents:
                raise AgentNotFound(agent_id)
        if weights:
            await self._store.set_weights(weights)
        overrides = await self._store.weights()
        return {a.id: overrides.get(a.id, a.default_weight) for a in agents.values()}

    async def reset_weights(self, agent_ids: Iterable[str]) -> None:
        """Drop the weight overrides of these agents, returning them to their defaults."""
        ids = check_ids(agent_ids)
        if ids:
            await self._store.clear_weights(ids)

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        """Switch strategy for every later pick; return the previous one."""
        return await self._store.set_strategy(strategy)

    # Selection.
    async def select(
        self,
        task: Task | None = None,
        session_id: str = "",
        candidates: Iterable[Agent] = (),
        acquire: bool = False,
    ) -> Selection:
        """Pick an agent for a task; with ``acquire`` also open its request's lease."""
        task = check_task(task or Task())
        pool = check_candidates(candidates)
        session_id = session_id if self._config.sticky_sessions else ""
        state = await self._store.pick_state(session_id)
        now = self._clock()
        try:
            agent, sticky, bind = self._decide(state, task, pool, session_id, now)
        except NoAgentAvailable as refusal:
            await self._store.record_failed_selection()
            outcome = next(o for cls, o in _REFUSALS if isinstance(refusal, cls))
            self.observer.selection(state.strategy, outcome)
            raise
        request_id = await self._store.commit_pick(
            Pick(agent.id, now, acquire=acquire, session_id=session_id, bind=bind)
        )
        self.observer.selection(state.strategy, Outcome.STICKY if sticky else Outcome.SELECTED)
        return Selection(agent, state.strategy, sticky=sticky, request_id=request_id)

    def _decide(
        self, state: PickState, task: Task, pool: Sequence[Agent], session_id: str, now: int
    ) -> tuple[Agent, bool, bool]:
        """Return (agent, answered from the binding, bind the session to it)."""
        agents = pool or tuple(state.agents.values())
        if not agents:
            raise NoAgentsRegistered()
        matching = eligible(agents, task)
        stats = state.stats

        def has_room(agent: Agent) -> bool:
            limit = agent.max_connections
            return limit == 0 or _active(stats, agent.id) < limit

        bound = self._bound_agent(state, matching, now)
        if bound is not None and has_room(bound):
            return bound, True, False
        free = [agent for agent in matching if has_room(agent)]
        if not free:
            raise AllAgentsBusy(
                f"all {len(matching)} eligible agent(s) are at max_connections; retry later"
            )
        weights = state.weights
        choice = STRATEGIES[state.strategy].choose(
            [
                Candidate(
                    agent,
                    _active(stats, agent.id),
                    _latency(stats, agent.id),
                    weights.get(agent.id, agent.default_weight),
                )
                for agent in free
            ],
            task,
            PickContext(state.sequence, self._rng),
        )
        if choice is None:
            raise NoEligibleAgent(
                f"every eligible agent has weight 0, so the {state.strategy.value} strategy "
                "picks none; raise a weight with UpdateWeights or change strategy"
            )
        # A session whose agent is merely full spills over and keeps its binding;
        # one with no binding, an expired one, or an ineligible agent binds anew.
        return choice.agent, False, bool(session_id) and bound is None

    def _bound_agent(self, state: PickState, matching: Sequence[Agent], now: int) -> Agent | None:
        binding = state.binding
        if binding is None or now - binding.last_used_ms >= self._config.session_ttl_s * 1000:
            return None
        return next((a for a in matching if a.id == binding.agent_id), None)

    # Request tracking.
    async def start(self, agent_id: str) -> str:
        """Record that a request went to the agent; return its lease's request_id."""
        await self._require_known(require_id(agent_id))
        return await self._store.open_lease(agent_id, self._clock())

    async def end(
        self, agent_id: str, latency_ms: float, request_id: str = "", failed: bool = False
    ) -> None:
        """Record that a request finished: close its lease and fold in its latency.

        With ``request_id`` the end is idempotent (a repeat is a no-op); without one it
        closes the agent's oldest open lease, or only records the latency if none is open.
        """
        require_amount(latency_ms, "latency_ms")
        if not request_id:
            await self._require_known(require_id(agent_id, "agent_id (or request_id)"))
        result = await self._store.end_request(
            RequestEnd(
                agent_id,
                request_id,
                latency_ms,
                failed,
                self._clock(),
                self._config.latency_smoothing,
            )
        )
        if result.outcome is EndOutcome.UNKNOWN_REQUEST:
            raise LeaseNotFound(request_id)
        if result.outcome is EndOutcome.WRONG_AGENT:
            raise InvalidArgument(
                f"request_id {request_id!r} was issued for agent "
                f"{result.lease_agent_id!r}, not {agent_id!r}"
            )

    async def sweep(self) -> tuple[int, int]:
        """Expire overdue leases and idle sessions; return how many of each."""
        now = self._clock()
        leases = await self._store.expire_leases(now - int(self._config.request_timeout_s * 1000))
        sessions = await self._store.expire_sessions(now - int(self._config.session_ttl_s * 1000))
        if leases:
            self.observer.leases_expired(len(leases))
        return len(leases), sessions

    async def session_count(self) -> int:
        """Sticky-session bindings currently held (some may be idle until the next sweep)."""
        return await self._store.session_count()

    # Reads.
    async def loads(self, agent_ids: Iterable[str] = ()) -> list[AgentLoad]:
        """Loads of the given agents, or of every registered agent when none are given."""
        ids = check_ids(agent_ids)
        agents = await self._store.agents()
        stats = await self._store.stats()
        weights = await self._store.weights()
        if not ids:
            ids = tuple(agents)
        for agent_id in ids:
            if agent_id not in agents and agent_id not in stats:
                raise AgentNotFound(agent_id)
        return [_load(agent_id, agents, stats, weights) for agent_id in ids]

    async def statistics(self) -> Statistics:
        """Service-wide counters and the current strategy."""
        counters = await self._store.counters()
        stats = await self._store.stats()
        return Statistics(
            strategy=await self._store.strategy(),
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
        interval = max(min_interval_s, self._config.watch_min_interval_s)
        ids = check_ids(agent_ids)
        loop = asyncio.get_running_loop()
        version = self._store.version()
        last = await self.loads(ids)
        sent_at = loop.time()
        yield LoadSnapshot(tuple(last), self._clock())
        while True:
            version = await self._store.wait_for_change(version)
            # Wait out the rest of the interval, then read once: every change made
            # meanwhile lands in this one snapshot.
            await asyncio.sleep(max(0.0, sent_at + interval - loop.time()))
            version = self._store.version()
            current = await self.loads(ids)
            if current != last:
                last, sent_at = current, loop.time()
                yield LoadSnapshot(tuple(current), self._clock())

    async def _require_known(self, agent_id: str) -> None:
        # Known = registered, or seen before (a candidate that was picked or started).
        if agent_id not in await self._store.agents() and agent_id not in await self._store.stats():
            raise AgentNotFound(agent_id)


def _active(stats: Mapping[str, AgentStats], agent_id: str) -> int:
    record = stats.get(agent_id)
    return record.active if record is not None else 0


def _latency(stats: Mapping[str, AgentStats], agent_id: str) -> float | None:
    record = stats.get(agent_id)
    return record.avg_latency_ms if record is not None else None


def _load(
    agent_id: str,
    agents: Mapping[str, Agent],
    stats: Mapping[str, AgentStats],
    weights: Mapping[str, float],
) -> AgentLoad:
    record = stats.get(agent_id, AgentStats())
    agent = agents.get(agent_id)
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
    )

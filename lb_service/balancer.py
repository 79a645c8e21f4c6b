"""The LoadBalancer: requirements, stickiness and leases around a pluggable strategy.

A selection reads one snapshot from the store, filters the agents by the task, honours
the session's binding, lets the strategy choose among the agents with spare capacity,
and commits the decision (and, with ``acquire``, the request's start) in one store call.

Every change in an agent's life is logged here, one line with its ids, whoever caused
it (an RPC, a config reload, the sweep): registered, deregistered, ejected, returned,
a lease expired. Counting is left to an ``Observer`` (the metrics).
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

import structlog

from lb_service.capacity import learned_capacity
from lb_service.decision import Decision, DecisionInputs, Refusal, RefusalKind, decide
from lb_service.errors import (
    AgentNotFound,
    AllAgentsBusy,
    AllAgentsDraining,
    InvalidArgument,
    LeaseNotFound,
    LimitExceeded,
    NoAgentAvailable,
    NoAgentsRegistered,
    NoEligibleAgent,
)
from lb_service.health.monitor import HealthMonitor, HealthObserver, HealthOptions, NoHealthObserver
from lb_service.health.state import HEALTHY_RECORD, HealthRecord, Thresholds
from lb_service.model import (
    Agent,
    AgentLoad,
    Engine,
    LoadSnapshot,
    Selection,
    Statistics,
    StrategyName,
    Task,
)
from lb_service.store.base import (
    AgentStats,
    Contender,
    EndOutcome,
    Limit,
    Pick,
    PickState,
    Registered,
    RequestEnd,
    Store,
    UnknownAgent,
)
from lb_service.store.feedback import Ejection, Feedback, is_ejected
from lb_service.validation import (
    check_agent,
    check_candidates,
    check_ids,
    check_model,
    check_session_id,
    check_task,
    check_weights,
    require_amount,
    require_id,
)

#: Returns the current time as unix milliseconds.
Clock = Callable[[], int]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)


def silent_logger() -> structlog.typing.FilteringBoundLogger:
    """A logger that writes nothing: for a balancer whose events nobody reads (the simulator)."""
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[]
    )
    return logger


def system_clock() -> int:
    """Wall-clock time in unix milliseconds."""
    return time.time_ns() // 1_000_000


def _whole(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


#: BalancerConfig's value rules: (options, the rule in words, the check).
_OPTION_RULES: tuple[tuple[tuple[str, ...], str, Callable[[float], bool]], ...] = (
    (
        ("session_ttl_s", "request_timeout_s", "watch_min_interval_s", "ewma_decay_s",
         "ejection_base_s", "ejection_max_s", "probe_interval_s", "probe_timeout_s",
         "agent_expiry_s"),
        "a finite number > 0",
        lambda v: math.isfinite(v) and v > 0,
    ),
    (
        ("failure_penalty_ms", "slow_start_window_s", "pick_hold_s"),
        "a finite number >= 0",
        lambda v: math.isfinite(v) and v >= 0,
    ),
    (
        ("latency_smoothing", "ejection_max_share", "slow_start_min_share"),
        "in (0, 1]",
        lambda v: 0 < v <= 1,
    ),
    (
        ("balance_factor",),
        "a finite number >= 1",
        lambda v: math.isfinite(v) and v >= 1,
    ),
    (
        ("max_candidates", "max_agents", "max_sessions", "max_leases",
         "probe_unhealthy_threshold", "probe_healthy_threshold"),
        "a whole number >= 1",
        lambda v: _whole(v, 1),
    ),
    (
        ("ejection_consecutive_failures",),
        "a whole number >= 0",
        lambda v: _whole(v, 0),
    ),
    (
        ("choice_count",),
        "None (each strategy's own) or a whole number >= 0",
        lambda v: v is None or _whole(v, 0),
    ),
)  # fmt: skip


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
    # Limits: whatever clients send, state stays bounded by these counts (and each
    # record by validation's size rules). Hitting one refuses the call and changes nothing.
    #: Most candidates one SelectAgent may pass.
    max_candidates: int = 1000
    #: Most registered agents; also how many unused histories of unregistered ids are kept.
    max_agents: int = 10_000
    #: Most sticky-session bindings held at once.
    max_sessions: int = 100_000
    #: Most open leases (requests started and not yet ended or expired).
    max_leases: int = 100_000
    # Decision quality (see lb_service.capacity and lb_service.store.feedback).
    #: Bounded loads: a sticky session's agent takes a request only while it then holds
    #: at most this many times its capacity share of the open requests (else the request
    #: spills over, keeping the binding); capability-match's "room" is the same bound.
    balance_factor: float = 3.0
    #: Least-connections and latency-based compare this many eligible agents drawn in
    #: proportion to capacity and keep the best (0: every one); None: each strategy's
    #: own (``Strategy.default_choice_count``: least-connections every agent, which
    #: pending picks keep exact when starts are reported late; latency-based two).
    choice_count: int | None = None
    #: A pick made without ``acquire`` counts as a request on its agent for this long,
    #: or until a start is reported there (``lb_service.store.pending``); 0 = never.
    pick_hold_s: float = 1.0
    #: Latency-based ranks by peak-EWMA cost (estimate x (active + 1)); False ranks by
    #: the plain moving average.
    peak_ewma: bool = True
    #: Time constant of the peak-EWMA estimate's decay.
    ewma_decay_s: float = 10.0
    #: The least latency a failed request counts as in the peak-EWMA estimate.
    failure_penalty_ms: float = 5_000.0
    #: Failures in a row that eject an agent (0 turns outlier ejection off).
    ejection_consecutive_failures: int = 5
    #: First ejection time; the n-th ejection lasts n times as long, up to the maximum.
    ejection_base_s: float = 30.0
    ejection_max_s: float = 300.0
    #: Most agents ejected at once, as a share of the registered agents.
    ejection_max_share: float = 0.5
    #: A new or returning agent ramps up over this window (0 turns slow start off).
    slow_start_window_s: float = 0.0
    #: The share of its picks an agent takes at the start of its slow-start window.
    slow_start_min_share: float = 0.1
    # Health (see lb_service.health): probes, heartbeats, drain.
    #: Time between two probes of an agent with an engine (jittered).
    probe_interval_s: float = 5.0
    #: A probe not answered within this time fails (``probe: timeout after 1.0 s``).
    probe_timeout_s: float = 1.0
    #: Failed probes in a row that make a healthy agent unhealthy.
    probe_unhealthy_threshold: int = 3
    #: Successful probes in a row that bring an unhealthy agent back (the first ever
    #: success makes a new agent healthy on its own, as in Envoy).
    probe_healthy_threshold: int = 2
    #: How long a heartbeat agent silent past its heartbeat TTL stays registered.
    agent_expiry_s: float = 300.0

    def __post_init__(self) -> None:
        """Reject values the balancer cannot work with."""
        for names, rule, holds in _OPTION_RULES:
            for name in names:
                value = getattr(self, name)
                if not holds(value):
                    raise ValueError(f"{name} must be {rule}, got {value!r}")

    @property
    def health_options(self) -> HealthOptions:
        """The rules the health monitor applies."""
        return HealthOptions(
            thresholds=Thresholds(
                healthy=self.probe_healthy_threshold, unhealthy=self.probe_unhealthy_threshold
            ),
            agent_expiry_ms=int(self.agent_expiry_s * 1000),
        )

    @property
    def feedback(self) -> Feedback:
        """The rules request ends are folded in by, as the store applies them."""
        return Feedback(
            smoothing=self.latency_smoothing,
            decay_ms=self.ewma_decay_s * 1000,
            failure_penalty_ms=self.failure_penalty_ms,
            ejection=Ejection(
                consecutive_failures=self.ejection_consecutive_failures,
                base_ms=self.ejection_base_s * 1000,
                max_ms=self.ejection_max_s * 1000,
                max_share=self.ejection_max_share,
            ),
        )


class Outcome(enum.Enum):
    """How a selection ended, as observers see it."""

    SELECTED = "selected"
    STICKY = "sticky"
    NO_AGENTS = "no_agents"
    NO_ELIGIBLE_AGENT = "no_eligible_agent"
    ALL_BUSY = "all_busy"
    ALL_DRAINING = "all_draining"


_REFUSALS: tuple[tuple[type[NoAgentAvailable], Outcome], ...] = (
    (NoAgentsRegistered, Outcome.NO_AGENTS),
    (AllAgentsBusy, Outcome.ALL_BUSY),
    (AllAgentsDraining, Outcome.ALL_DRAINING),
    (NoAgentAvailable, Outcome.NO_ELIGIBLE_AGENT),
)


def _refusal_error(refusal: Refusal) -> NoAgentAvailable:
    """The error a refusal is raised as, at the edge."""
    if refusal.kind is RefusalKind.NO_AGENTS:
        return NoAgentsRegistered()
    if refusal.kind is RefusalKind.ALL_BUSY:
        return AllAgentsBusy(refusal.message)
    if refusal.kind is RefusalKind.ALL_DRAINING:
        return AllAgentsDraining(refusal.message)
    return NoEligibleAgent(refusal.message)


def _contenders(decision: Decision) -> tuple[Contender, ...]:
    """What a shared store may re-rank at commit: the compared agents with their load ranks.

    A rule that does not rank by load commits its choice as made; the store still
    checks its room.
    """
    if not decision.compared:
        agent = decision.choice.agent
        return (Contender(agent.id, agent.max_connections),)
    return tuple(Contender(c.agent.id, c.agent.max_connections, *r) for c, r in decision.compared)


class Observer(HealthObserver, Protocol):
    """Receives events worth counting (metrics), without the core knowing who listens."""

    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        """A selection ended with this outcome under this strategy."""

    def request_ended(self, agent_id: str, latency_ms: float, failed: bool) -> None:
        """A request end was recorded for the agent (not a repeated one)."""

    def lease_expired(self, agent_id: str) -> None:
        """The sweep expired one of the agent's leases (a failed request)."""

    def agent_ejected(self, agent_id: str) -> None:
        """Outlier ejection took the agent out."""

    def agent_registered(self, agent_id: str) -> None:
        """An agent not registered until now was added to the registry."""

    def agent_deregistered(self, agent_id: str) -> None:
        """The agent was removed from the registry."""


class _NoObserver(NoHealthObserver):
    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        pass

    def request_ended(self, agent_id: str, latency_ms: float, failed: bool) -> None:
        pass

    def lease_expired(self, agent_id: str) -> None:
        pass

    def agent_ejected(self, agent_id: str) -> None:
        pass

    def agent_registered(self, agent_id: str) -> None:
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
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        """Build a balancer over ``store``; inject ``clock`` and ``rng`` for exact tests.

        Lifecycle events go to ``logger`` (this module's structlog logger by default).
        """
        self._store = store
        self._config = config or BalancerConfig()
        # Built once: every request end passes it to the store.
        self._feedback = self._config.feedback
        self._clock = clock
        self._rng = rng or random.Random()
        self.observer: Observer = observer or _NoObserver()
        self._log = logger or log
        #: Probes, heartbeats and drains, through the same store, clock and log.
        self.health = HealthMonitor(
            store, self._config.health_options, clock, self._log, self.observer
        )
        # The last snapshot read for a watcher, by (agent ids, store version).
        self._last_snapshot: tuple[tuple[tuple[str, ...], int], LoadSnapshot] | None = None

    @property
    def config(self) -> BalancerConfig:
        """The options this balancer runs with."""
        return self._config

    # Registry and configuration.
    async def register(self, agent: Agent) -> None:
        """Add or replace an agent; its load history survives a re-register."""
        check_agent(agent)
        # The store checks the limit in the step that adds the agent, so it holds
        # across replicas sharing the store.
        outcome = await self._store.put_agent(agent, self._clock(), self._config.max_agents)
        if isinstance(outcome, Limit):
            raise self._limit_error(outcome)
        if outcome is not Registered.UNCHANGED:  # re-registering as it is: no line
            self._log.info(
                "agent_registered",
                agent_id=agent.id,
                host=agent.host,
                port=agent.port,
                models=list(agent.models),
                new=outcome is Registered.ADDED,
            )
        if outcome is Registered.ADDED:
            self.observer.agent_registered(agent.id)
        # An agent nothing watches has no health record unless a change removed what
        # was watched: only then is there one to update (and a round trip to pay).
        watched = agent.engine is not Engine.UNSPECIFIED or agent.heartbeat_ttl_ms > 0
        if watched or outcome is Registered.CHANGED:
            await self.health.registered(agent)

    async def deregister(self, agent_id: str) -> None:
        """Remove an agent; its sessions move on their next request."""
        if not await self._store.delete_agent(require_id(agent_id)):
            raise AgentNotFound(agent_id)
        self._log.info("agent_deregistered", agent_id=agent_id)
        self.observer.agent_deregistered(agent_id)

    async def agents(self) -> list[Agent]:
        """Every registered agent, in registration order."""
        return list((await self._store.agents()).values())

    async def update_weights(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Override weights all or nothing; return every agent's effective weight."""
        check_weights(weights)
        # The store checks the ids in the step that applies the overrides, so an agent
        # deregistered through another replica meanwhile is refused, not weighted.
        applied = await self._store.set_weights(weights, only_registered=True)
        if isinstance(applied, UnknownAgent):
            raise AgentNotFound(applied.agent_id)
        overrides = applied.weights
        return {a.id: overrides.get(a.id, a.default_weight) for a in applied.agents.values()}

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
        pool = check_candidates(candidates, self._config.max_candidates)
        session_id = check_session_id(session_id) if self._config.sticky_sessions else ""
        state = await self._store.pick_state(session_id, tuple(a.id for a in pool) if pool else ())
        now = self._clock()
        outcome = decide(self._inputs(state, pool, now), task, session_id)
        if isinstance(outcome, Refusal):
            refusal = _refusal_error(outcome)
            await self._refused(state.strategy, refusal)
            raise refusal
        if outcome.panic or self.health.panicking:
            self.health.decided(task, outcome.panic)
        choice = outcome.choice.agent
        committed = await self._store.commit_pick(
            Pick(
                choice.id,
                now,
                acquire=acquire,
                session_id=session_id,
                bind=outcome.bind,
                contenders=_contenders(outcome) if state.shared else (),
                fresh_since_ms=now - int(self._config.session_ttl_s * 1000) if session_id else 0,
                seen=state.binding,
                # Checked in the commit's atomic step, after a pick was possible: a
                # refusal for want of an agent keeps its own code.
                max_leases=self._config.max_leases,
                max_sessions=self._config.max_sessions,
                model=task.model,
                hold_until_ms=0 if acquire else now + int(self._config.pick_hold_s * 1000),
            )
        )
        if isinstance(committed, Limit):
            raise self._limit_error(committed)
        if committed is None:
            # Only a shared store: other replicas filled every contender meanwhile. The
            # store counted the failed selection in the commit's own step.
            busy = AllAgentsBusy(
                "every agent chosen among reached max_connections (or was drained) meanwhile; retry"
            )
            self.observer.selection(state.strategy, Outcome.ALL_BUSY)
            raise busy
        agent = choice
        if committed.agent_id != choice.id:
            # A shared store re-ranked on fresher loads, or the session was bound meanwhile.
            by_id = {c.agent.id: c.agent for c, _ in outcome.compared}
            agent = by_id.get(committed.agent_id) or state.agents[committed.agent_id]
        sticky = outcome.sticky or committed.sticky
        self.observer.selection(state.strategy, Outcome.STICKY if sticky else Outcome.SELECTED)
        return Selection(agent, state.strategy, sticky=sticky, request_id=committed.request_id)

    def _inputs(self, state: PickState, candidates: Sequence[Agent], now: int) -> DecisionInputs:
        """What the decision reads: the snapshot (or the caller's candidates) and the options.

        The store's index is passed on for registered agents only, and only when no
        other replica can move the loads before the commit.
        """
        config = self._config
        binding = state.binding
        if binding is not None and now - binding.last_used_ms >= config.session_ttl_s * 1000:
            binding = None  # idle past the TTL: the session binds anew
        # Every field, in order, through tuple.__new__: the NamedTuple's generated __new__
        # is a Python call, as costly as a tree descent, on every selection.
        return tuple.__new__(
            DecisionInputs,
            (
                candidates or state.agents.values(),
                state.stats,
                state.weights,
                state.ejections,
                state.strategy,
                state.sequence,
                now,
                self._rng,
                config.choice_count,
                config.peak_ewma,
                config.balance_factor,
                binding,
                config.slow_start_window_s * 1000,
                config.slow_start_min_share,
                None if candidates or state.shared else state.pool,
                config.ewma_decay_s * 1000,
                state.out,
            ),
        )

    async def _refused(self, strategy: StrategyName, refusal: NoAgentAvailable) -> None:
        await self._store.record_failed_selection()
        outcome = next(o for cls, o in _REFUSALS if isinstance(refusal, cls))
        self.observer.selection(strategy, outcome)

    # Request tracking.
    async def start(self, agent_id: str, model: str = "") -> str:
        """Record that a request went to the agent; return its lease's request_id.

        ``model`` is the model the request asks for ("" = not told): its lease keeps it,
        so the request's end teaches the model's cost on the agent (``model_cost``).
        """
        # Known (registered, or seen before: a candidate that was picked or started) and
        # the lease limit are checked by the store in the step that opens the lease.
        opened = await self._store.open_lease(
            require_id(agent_id),
            self._clock(),
            self._config.max_leases,
            only_known=True,
            model=check_model(model),
        )
        if isinstance(opened, UnknownAgent):
            raise AgentNotFound(opened.agent_id)
        if isinstance(opened, Limit):
            raise self._limit_error(opened)
        return opened

    def _limit_error(self, limit: Limit) -> LimitExceeded:
        """The error for a limit a store operation refused to go past."""
        config = self._config
        if limit is Limit.AGENTS:
            return LimitExceeded(
                f"{config.max_agents} agents are registered, the most allowed (max_agents); "
                "deregister unused agents or raise --max-agents"
            )
        if limit is Limit.SESSIONS:
            return LimitExceeded(
                f"{config.max_sessions} sticky sessions are held, the most allowed "
                "(max_sessions); retry without session_id, wait for idle sessions to "
                "expire (session_ttl_s) or raise --max-sessions"
            )
        return LimitExceeded(
            f"{config.max_leases} leases are open, the most allowed (max_leases); end "
            "requests with RecordRequestEnd (leases never ended expire after "
            "request_timeout_s) or raise --max-leases"
        )

    async def end(
        self, agent_id: str, latency_ms: float, request_id: str = "", failed: bool = False
    ) -> None:
        """Record that a request finished: close its lease and fold in its latency.

        With ``request_id`` the end is idempotent (a repeat is a no-op); without one it
        closes the agent's oldest open lease, or only records the latency if none is open.
        """
        require_amount(latency_ms, "latency_ms")
        if not request_id:
            require_id(agent_id, "agent_id (or request_id)", "agent_id")
        now = self._clock()
        # Without a request id the agent must be known; the store checks it in the step
        # that records the end.
        result = await self._store.end_request(
            RequestEnd(
                agent_id, request_id, latency_ms, failed, now, self._feedback, only_known=True
            )
        )
        if result.outcome is EndOutcome.UNKNOWN_AGENT:
            raise AgentNotFound(agent_id)
        if result.outcome is EndOutcome.UNKNOWN_REQUEST:
            raise LeaseNotFound(request_id)
        if result.outcome is EndOutcome.WRONG_AGENT:
            raise InvalidArgument(
                f"request_id {request_id!r} was issued for agent "
                f"{result.lease_agent_id!r}, not {agent_id!r}",
                "agent_id",
            )
        if result.agent_id:
            self.observer.request_ended(result.agent_id, latency_ms, failed)
        if result.ejected_until_ms:
            self._log.warning(
                "agent_ejected",
                agent_id=result.agent_id,
                failures=result.failures,
                ejected_for_s=(result.ejected_until_ms - now) / 1000,
            )
            self.observer.agent_ejected(result.agent_id)

    async def sweep(self) -> tuple[int, int]:
        """Expire overdue leases and idle sessions; return how many of each.

        It also forgets the load history of ids that are neither registered nor hold a
        lease (candidates, deregistered agents) once unused for the session TTL, keeping
        at most ``max_agents`` of them, so passing ever new candidate ids cannot grow
        memory without bound.
        """
        now = self._clock()
        leases = await self._store.expire_leases(
            now - int(self._config.request_timeout_s * 1000), now, self._feedback
        )
        for lease in leases:
            self._log.warning(
                "lease_expired",
                agent_id=lease.agent_id,
                request_id=lease.request_id,
                age_s=(now - lease.started_at_ms) / 1000,
            )
            self.observer.lease_expired(lease.agent_id)
        back = await self._store.expire_ejections(now)
        if back:
            stats = await self._store.stats()
            for agent_id in back:
                record = stats.get(agent_id, AgentStats())
                self._log.info(
                    "agent_returned",
                    agent_id=agent_id,
                    failed_requests=record.failed_requests,
                    times_ejected=record.times_ejected,
                )
        idle_since = now - int(self._config.session_ttl_s * 1000)
        sessions = await self._store.expire_sessions(idle_since)
        await self._store.forget_idle(idle_since, keep=self._config.max_agents)
        return len(leases), sessions

    async def session_count(self) -> int:
        """Sticky-session bindings currently held (some may be idle until the next sweep)."""
        return await self._store.session_count()

    # Reads.
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
        return [
            _load(agent_id, agents, stats, weights, now, health.get(agent_id, HEALTHY_RECORD))
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
        interval = max(min_interval_s, self._config.watch_min_interval_s)
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
    now: int,
    health: HealthRecord,
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
        ejected_until_ms=record.ejected_until_ms if is_ejected(record, now) else 0,
        capacity_rps=learned_capacity(record) or 0.0,
        health=health.health,
        health_reason=health.reason,
    )

"""The LoadBalancer: requirements, stickiness and leases around a pluggable strategy.

A selection reads one snapshot from the store, filters the agents by the task, honours
the session's binding, lets the strategy choose among the agents with spare capacity,
and commits the decision (and, with ``acquire``, the request's start) in one store call.
Its options are ``options.BalancerConfig``; what it logs and counts, ``events``; its
reads of the fleet, ``reads``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Iterable, Mapping

import structlog

from lb_service.balancer.events import (
    REFUSALS,
    Clock,
    NoObserver,
    Observer,
    Outcome,
    log,
    refusal_error,
    system_clock,
)
from lb_service.balancer.inputs import contenders, decision_inputs
from lb_service.balancer.options import BalancerConfig
from lb_service.balancer.reads import LoadReads
from lb_service.decision import Refusal, decide
from lb_service.errors import (
    AgentNotFound,
    AllAgentsBusy,
    InvalidArgument,
    LeaseNotFound,
    LimitExceeded,
    NoAgentAvailable,
)
from lb_service.health.monitor import HealthMonitor
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
    EndOutcome,
    Limit,
    Pick,
    Registered,
    RequestEnd,
    UnknownAgent,
)
from lb_service.store.roles import Store
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
        self._saturation = self._config.saturation
        self._clock = clock
        self._rng = rng or random.Random()
        self.observer: Observer = observer or NoObserver()
        self._log = logger or log
        #: Probes, heartbeats and drains, through the same store, clock and log.
        self.health = HealthMonitor(
            store, self._config.health_options, clock, self._log, self.observer
        )
        self._reads = LoadReads(store, self._config, clock)

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
        inputs = decision_inputs(state, pool, now, self._config, self._rng, self._saturation)
        outcome = decide(inputs, task, session_id)
        if isinstance(outcome, Refusal):
            refusal = refusal_error(outcome)
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
                contenders=contenders(outcome, inputs.reports) if state.shared else (),
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

    async def _refused(self, strategy: StrategyName, refusal: NoAgentAvailable) -> None:
        await self._store.record_failed_selection()
        outcome = next(o for cls, o in REFUSALS if isinstance(refusal, cls))
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

    async def loads(self, agent_ids: Iterable[str] = ()) -> list[AgentLoad]:
        """Loads of the given agents, or of every registered agent when none are given."""
        return await self._reads.loads(agent_ids)

    async def statistics(self) -> Statistics:
        """Service-wide counters and the current strategy."""
        return await self._reads.statistics()

    def watch(
        self, agent_ids: Iterable[str] = (), min_interval_s: float = 0.0
    ) -> AsyncGenerator[LoadSnapshot, None]:
        """A full snapshot at once, then one whenever it changes (``LoadReads.watch``)."""
        return self._reads.watch(agent_ids, min_interval_s)

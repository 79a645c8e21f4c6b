"""The health monitor: applies probes, heartbeats, drains and the expiry sweep to the store.

Every change is a compare-and-set of the agent's record through the store
(``Store.put_health``), retried on conflict, so replicas sharing a store never lose one
another's changes and a transition is applied, logged and counted by exactly one of
them. The rules themselves are ``health.state``'s; this module only reads, applies and
reports: every change of an agent's health is one log line with the agent's id and the
reason, one call to the observer (metrics), and a new store version (WatchLoads).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from lb_service.errors import AgentNotFound, InvalidArgument, StoreUnavailable
from lb_service.health import state
from lb_service.health.result import ProbeResult
from lb_service.health.state import HEALTHY_RECORD, HealthRecord, Thresholds
from lb_service.model import Agent, AgentHealth, Engine, LoadReport, Task
from lb_service.reports import check_report
from lb_service.store.base import HealthWrite
from lb_service.store.roles import HealthRecords, Reads, Registry, Reports
from lb_service.validation import check_agent

#: Compare-and-set attempts of one change before it gives up (only under heavy contention).
WRITE_ATTEMPTS = 8
#: Task shapes whose panic state is remembered (beyond, the memory starts over).
_MAX_PANIC_TASKS = 1024

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)


class HealthObserver(Protocol):
    """Receives health events worth counting (metrics)."""

    def health_changed(self, agent_id: str, previous: AgentHealth, health: AgentHealth) -> None:
        """The agent's health changed."""

    def probe_finished(self, agent_id: str, result: ProbeResult) -> None:
        """A probe of the agent finished (answered, failed or timed out)."""

    def heartbeat_missed(self, agent_id: str) -> None:
        """The agent missed its heartbeat TTL."""

    def panic_changed(self, panicking: bool) -> None:
        """Selections went into (True) or out of (False) panic mode for some task."""

    def agent_deregistered(self, agent_id: str) -> None:
        """The agent was removed from the registry (here: expired)."""


class NoHealthObserver:
    """A health observer that counts nothing."""

    def health_changed(self, agent_id: str, previous: AgentHealth, health: AgentHealth) -> None:
        """Count nothing."""

    def probe_finished(self, agent_id: str, result: ProbeResult) -> None:
        """Count nothing."""

    def heartbeat_missed(self, agent_id: str) -> None:
        """Count nothing."""

    def panic_changed(self, panicking: bool) -> None:
        """Count nothing."""

    def agent_deregistered(self, agent_id: str) -> None:
        """Count nothing."""


@dataclass(frozen=True, slots=True)
class HealthOptions:
    """The options the monitor applies (validated by ``BalancerConfig``)."""

    thresholds: Thresholds = field(default_factory=Thresholds)
    #: How long a heartbeat agent silent past its TTL stays registered.
    agent_expiry_ms: int = 300_000


def _system_clock() -> int:
    return time.time_ns() // 1_000_000


def is_probed(agent: Agent) -> bool:
    """Whether the agent's engine says how to probe it."""
    return agent.engine is not Engine.UNSPECIFIED


class HealthStore(Registry, HealthRecords, Reports, Reads, Protocol):
    """The store's roles health uses: the registry, health records, load reports and records."""


class HealthMonitor:
    """Applies health events to the store and reports every transition."""

    def __init__(
        self,
        store: HealthStore,
        options: HealthOptions | None = None,
        clock: Callable[[], int] = _system_clock,
        logger: structlog.typing.FilteringBoundLogger | None = None,
        observer: HealthObserver | None = None,
    ) -> None:
        """Watch the agents of ``store``; ``clock`` returns unix ms (inject it in tests)."""
        self._store = store
        self._options = options or HealthOptions()
        self._clock = clock
        self._log = logger or log
        self.observer: HealthObserver = observer or NoHealthObserver()
        #: Whether a prober runs: then a new engine agent waits for its first probe.
        self.probing = False
        self._panics: dict[Task, bool] = {}
        #: Tasks whose last decision was a panic.
        self._panicking = 0

    @property
    def store(self) -> HealthStore:
        """The store the records live in (the balancer's)."""
        return self._store

    # Events.
    async def registered(self, agent: Agent) -> None:
        """The agent was (re)registered: a heartbeat agent is alive, a probed one awaits a probe."""
        now = self._clock()
        probed = self.probing and is_probed(agent)
        await self._change(
            agent.id,
            lambda r: state.registered(
                r, probed=probed, heartbeat_ttl_ms=agent.heartbeat_ttl_ms, now_ms=now
            ),
        )

    async def heartbeat(self, agent_id: str, report: LoadReport | None = None) -> None:
        """The agent says it is alive, and with ``report`` how loaded it is.

        A report out of range is ``InvalidArgument`` and nothing is recorded, the
        heartbeat included; an agent not registered is ``AgentNotFound``.
        """
        if report is not None:
            check_report(report)
        now = self._clock()
        outcome = await self._change(agent_id, lambda r: state.heartbeat(r, now))
        if outcome is HealthWrite.UNKNOWN_AGENT or (
            report is not None and not await self._store.put_report(agent_id, report, now)
        ):
            raise AgentNotFound(agent_id, "register it again (RegisterAgent), then heartbeat")

    async def drain(self, agent_id: str, undrain: bool = False) -> int:
        """Drain the agent (or end its drain); return its open leases' count.

        Once this returns, no selection through any replica commits a lease on it.
        """
        if agent_id not in await self._store.agents():
            raise AgentNotFound(agent_id, "only registered agents can be drained")
        outcome = await self._change(agent_id, lambda r: state.drained(r, not undrain))
        if outcome is HealthWrite.UNKNOWN_AGENT:  # deregistered meanwhile
            raise AgentNotFound(agent_id, "only registered agents can be drained")
        return await self.active(agent_id)

    async def active(self, agent_id: str) -> int:
        """The agent's open leases now."""
        record = (await self._store.stats()).get(agent_id)
        return record.active if record is not None else 0

    async def probed(self, agent_id: str, result: ProbeResult) -> None:
        """Fold one probe's result into the agent's record (an agent gone meanwhile is skipped)."""
        self.observer.probe_finished(agent_id, result)
        if result.report is not None:
            await self._keep_report(agent_id, result.report)
        thresholds = self._options.thresholds
        await self._change(
            agent_id, lambda r: state.probed(r, result.ok, result.reason, thresholds)
        )

    async def _keep_report(self, agent_id: str, report: LoadReport) -> None:
        """Keep a probe's load report; one out of range is ignored with one log line."""
        try:
            check_report(report)
        except InvalidArgument as error:
            self._log.warning("load_report_ignored", agent_id=agent_id, reason=str(error))
            return
        await self._store.put_report(agent_id, report, self._clock())

    async def models_found(self, agent: Agent, models: tuple[str, ...]) -> None:
        """Record the models an agent registered without any says it has (Ollama's /api/tags).

        Only while the agent is registered exactly as probed: a registration since decides.
        A list that would make the agent invalid (an empty name, too much text) is ignored.
        """
        if agent.models or not models or (await self._store.agents()).get(agent.id) != agent:
            return
        learned = replace(agent, models=models)
        try:
            check_agent(learned)
        except InvalidArgument as error:
            self._log.warning("agent_models_ignored", agent_id=agent.id, reason=str(error))
            return
        await self._store.put_agent(learned, self._clock())
        self._log.info("agent_models_found", agent_id=agent.id, models=list(models))

    async def sweep(self, agents: Mapping[str, Agent]) -> list[str]:
        """Check every heartbeat agent's silence, expire the long-silent ones; return those expired.

        While probing, an engine agent without a verdict (registered before the prober
        ran, or restored from a state file) is given one: unhealthy until probed.
        """
        now = self._clock()
        # Copies: the memory store hands out live views, and this loop removes agents.
        records = dict(await self._store.health())
        expired: list[str] = []
        for agent in list(agents.values()):
            record = records.get(agent.id)
            unknown = record is None or record.probe_ok is None
            awaits_probe = self.probing and is_probed(agent) and unknown
            if awaits_probe or (record is None and agent.heartbeat_ttl_ms):
                # Registered before the monitor ran (a state file, another replica's
                # older release): its first check starts now.
                await self.registered(agent)
            elif record is not None and await self._silent(agent, record, now):
                expired.append(agent.id)
        return expired

    async def _silent(self, agent: Agent, record: HealthRecord, now: int) -> bool:
        """Check a heartbeat agent's silence; True when it expired and was removed here."""
        ttl = agent.heartbeat_ttl_ms
        if not ttl:
            return False
        if state.expired(record, ttl, self._options.agent_expiry_ms, now):
            if not await self._store.delete_agent(agent.id):
                return False  # another replica removed it first
            silent_s = (now - record.heartbeat_at_ms) // 1000
            self._log.warning(
                "agent_expired", agent_id=agent.id, reason=f"no heartbeat for {silent_s} s"
            )
            self.observer.agent_deregistered(agent.id)
            return True
        if state.silence(record, ttl, now) != record:
            await self._change(agent.id, lambda r: state.silence(r, ttl, now))
        return False

    def decided(self, task: Task, panic: bool) -> None:
        """A decision for ``task`` was made in panic mode or not: log a change, once."""
        if panic == self._panics.get(task, False):
            return
        if len(self._panics) >= _MAX_PANIC_TASKS:
            self._panics = {t: p for t, p in self._panics.items() if p}
        self._panics[task] = panic
        self._panicking += 1 if panic else -1
        if panic:
            self._log.warning(
                "health_panic",
                model=task.model,
                reason="every eligible agent is unhealthy: picking among them all the same",
            )
        else:
            self._log.info("health_panic_over", model=task.model)
        self.observer.panic_changed(panic)

    @property
    def panicking(self) -> bool:
        """Whether some task's last decision was made in panic mode (cheap: read per pick)."""
        return self._panicking > 0

    # Internals.
    async def _change(
        self, agent_id: str, rule: Callable[[HealthRecord], HealthRecord]
    ) -> HealthWrite:
        """Apply ``rule`` to the agent's record, compare-and-set, retried on conflict."""
        for _ in range(WRITE_ATTEMPTS):
            current = await self._store.health_of(agent_id)
            before = current or HEALTHY_RECORD
            after = rule(before)
            if after == before:
                return HealthWrite.APPLIED  # nothing to change
            outcome = await self._store.put_health(agent_id, after, current)
            if outcome is HealthWrite.CONFLICT:
                continue
            if outcome is HealthWrite.APPLIED and not (
                current is None and after.reason == state.NOT_PROBED_YET
            ):
                # (A new agent awaiting its first probe is where it starts, not a change.)
                self._report(agent_id, before, after)
            return outcome
        raise StoreUnavailable(
            f"the health record of agent {agent_id!r} kept changing under "
            f"{WRITE_ATTEMPTS} writes in a row; retry"
        )

    def _report(self, agent_id: str, before: HealthRecord, after: HealthRecord) -> None:
        if after.heartbeat_missed and not before.heartbeat_missed:
            self.observer.heartbeat_missed(agent_id)
        if after.health is before.health:
            return
        event = self._log.info if after.health is AgentHealth.HEALTHY else self._log.warning
        event(
            "agent_health_changed",
            agent_id=agent_id,
            health=after.health.value,
            previous=before.health.value,
            reason=after.reason or f"was: {before.reason}",
        )
        self.observer.health_changed(agent_id, before.health, after.health)

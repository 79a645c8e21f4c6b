"""The store's roles: one protocol per job, and ``Store``, a store that plays them all.

A consumer asks for the role it uses (the health monitor ``HealthRecords`` and
``Registry``, the reads ``Reads`` and ``ChangeFeed``), so what it depends on is in its
signature; the balancer and the server take the whole ``Store``. Every operation is
atomic; the records they hand out are ``lb_service.store.base``'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from lb_service.health.state import HealthRecord
from lb_service.model import Agent, LoadReport, StrategyName
from lb_service.store.base import (
    AgentStats,
    Committed,
    Configuration,
    Counters,
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
)

if TYPE_CHECKING:
    from lb_service.store.feedback import Feedback


class Registry(Protocol):
    """The registered agents, their weight overrides and the strategy."""

    async def put_agent(self, agent: Agent, now_ms: int, max_agents: int = 0) -> Registered | Limit:
        """Add or replace an agent, keeping its position, history and weight override.

        An agent not registered until now is stamped ``joined_ms = now_ms`` (slow start).
        A new id when ``max_agents`` (0 = no limit) are registered changes nothing and
        returns ``Limit.AGENTS``; a replacement always succeeds.
        """
        ...

    async def delete_agent(self, agent_id: str) -> bool:
        """Remove an agent and its weight override; False if it was not registered."""
        ...

    async def agents(self) -> Mapping[str, Agent]:
        """Registered agents by id, in registration order."""
        ...

    async def weights(self) -> Mapping[str, float]:
        """Weight overrides by agent id."""
        ...

    async def set_weights(
        self, weights: Mapping[str, float], *, only_registered: bool = False
    ) -> Configuration | UnknownAgent:
        """Apply all the overrides at once; returns the registry and overrides after it.

        With ``only_registered`` an id not registered changes nothing and is returned as
        ``UnknownAgent`` (the first such id in ``weights``' order). No overrides change
        nothing (and move no version).
        """
        ...

    async def clear_weights(self, agent_ids: Iterable[str]) -> None:
        """Drop the overrides of these agents."""
        ...

    async def strategy(self) -> StrategyName:
        """The current strategy."""
        ...

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        """Switch strategy; returns the one replaced."""
        ...


class Decisions(Protocol):
    """A selection's two steps: a consistent snapshot, then the decision committed."""

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """Snapshot what a selection needs, including the session's binding if any.

        ``stats`` must hold every registered agent and every id in ``candidate_ids`` (the
        agents a caller passed instead of the registry) that has a record.
        """
        ...

    async def commit_pick(self, pick: Pick) -> Committed | Limit | None:
        """Record a selection (opening a lease when acquiring).

        A ``Limit`` when the pick would open a lease past ``pick.max_leases`` or bind a
        new session past ``pick.max_sessions``; None only from a shared store, when
        every contender reached max_connections between the read and the commit. In
        either case no selection is recorded; a None is counted as a failed selection,
        in the same step (the caller does not call ``record_failed_selection`` for it).
        """
        ...

    async def record_failed_selection(self) -> None:
        """Count a selection that found no agent."""
        ...


class Leases(Protocol):
    """Requests started and ended: leases opened, closed and folded into the estimates."""

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

        With ``only_known``, an agent neither registered nor holding a load record
        changes nothing and is returned as ``UnknownAgent``; else, with ``max_leases``
        (0 = no limit) leases open, it changes nothing and returns ``Limit.LEASES``.
        ``model`` (the model the request asks for, "" = not told) is kept on the lease:
        its end is folded into that model's figures (``lb_service.model_cost``).
        """
        ...

    async def end_request(self, end: RequestEnd) -> EndResult:
        """Record a request end (see EndOutcome); changes nothing unless it succeeds."""
        ...


class Housekeeping(Protocol):
    """What the sweep expires and forgets: overdue leases, ejections, sessions and histories."""

    async def expire_leases(
        self, started_before_ms: int, now_ms: int, feedback: Feedback
    ) -> list[Lease]:
        """Close leases started before the cutoff as failed requests; returns them.

        Each counts as a failed request of its agent, but as lateness, not an agent
        failure: no latency sample, no outlier ejection (``feedback.close_lease``).
        """
        ...

    async def expire_ejections(self, now_ms: int) -> list[str]:
        """Bring back agents whose ejection is over; returns their ids (changes the version)."""
        ...

    async def expire_sessions(self, idle_since_ms: int) -> int:
        """Drop bindings not used since the cutoff; returns how many."""
        ...

    async def forget_idle(self, idle_since_ms: int, keep: int) -> int:
        """Forget the load history of ids neither registered nor holding a lease.

        An id goes when unused (picked, started or ended) since the cutoff, or when more
        than ``keep`` such ids remain (least recently used first). Its selections stay
        counted under the empty id in ``selections_by_agent``. Returns how many went.
        """
        ...


class HealthRecords(Protocol):
    """Health (``lb_service.health``): records written compare-and-set, and probe claims."""

    async def health(self) -> Mapping[str, HealthRecord]:
        """Health records of the registered agents that have one."""
        ...

    async def health_of(self, agent_id: str) -> HealthRecord | None:
        """One agent's health record; None when it has none (or is not registered)."""
        ...

    async def put_health(
        self, agent_id: str, record: HealthRecord, expected: HealthRecord | None
    ) -> HealthWrite:
        """Replace the agent's record with ``record`` if it is still ``expected`` (None: none).

        Atomic, so writers on several replicas (probes, heartbeats, drains, the sweep)
        never lose each other's changes: a ``CONFLICT`` is read again and retried. An
        agent not registered is ``UNKNOWN_AGENT``. A write that changes the agent's
        health moves the version (WatchLoads) and what ``PickState.out`` shows.
        ``delete_agent`` drops the record.
        """
        ...

    async def claim_probe(self, agent_id: str, now_ms: int, hold_ms: int) -> bool:
        """Claim the agent's next probe for ``hold_ms``; False while another claim holds.

        With replicas sharing the store, one probe per agent per interval is made across
        all of them; a claim lapses by itself, so a replica that dies leaves no agent
        unprobed for longer than one hold.
        """
        ...


class Reports(Protocol):
    """Agents' own load reports (``lb_service.reports``), shared by every replica."""

    async def put_report(self, agent_id: str, report: LoadReport, now_ms: int) -> bool:
        """Keep ``report`` as the agent's freshest, received at ``now_ms``; False if unknown.

        Atomic with the agent's lease count: the kept ``ReceivedReport`` notes the
        leases open on the agent as the report arrives (``leases_at``), so what the
        agent reported beyond them (``unseen``) is not counted twice. A report for an
        agent not registered changes nothing. ``PickState.reports`` and
        ``Overview.reports`` show it, the state version moves (WatchLoads shows it),
        and ``delete_agent`` drops it.
        """
        ...


class Reads(Protocol):
    """Read-only views of the state: records, counts, leases and counters."""

    async def stats(self) -> Mapping[str, AgentStats]:
        """Load history of every agent id ever seen, registered or candidate."""
        ...

    async def session_count(self) -> int:
        """Sticky-session bindings held."""
        ...

    async def lease_count(self) -> int:
        """Leases open (what the max_leases limit counts)."""
        ...

    async def leases(self) -> Mapping[str, Lease]:
        """Every open lease by request_id (read-only)."""
        ...

    async def counters(self) -> Counters:
        """Service-wide counters."""
        ...

    async def overview(self) -> Overview:
        """Strategy, registry, weights, every load record and the counters, in one read."""
        ...


class ChangeFeed(Protocol):
    """Change notification: a version that moves with every change, and a wait for it."""

    async def wait_for_change(self, seen_version: int) -> int:
        """Wait until the state version differs from ``seen_version``; return the new one."""
        ...

    def version(self) -> int:
        """The state version; it changes whenever the registry, weights, strategy or a load does."""
        ...


class Lifecycle(Protocol):
    """A store's life beyond its state: answering health checks and releasing what it holds."""

    async def check(self) -> None:
        """Return when the store answers; raise ``StoreUnavailable`` when it does not (health)."""
        ...

    async def close(self) -> None:
        """Release what the store holds (connections, pollers); a store holding nothing returns."""
        ...


class Store(
    Registry,
    Decisions,
    Leases,
    Housekeeping,
    HealthRecords,
    Reports,
    Reads,
    ChangeFeed,
    Lifecycle,
    Protocol,
):
    """All mutable state of the balancer, every role in one; every operation is atomic."""

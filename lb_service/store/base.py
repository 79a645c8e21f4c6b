"""The store interface: the one place mutable state lives, and the records it hands out.

The balancer reads a consistent snapshot with ``pick_state``, decides, then writes the
decision back with ``commit_pick``. An in-process store makes the pair atomic by never
suspending between them; a shared store (several replicas) makes ``commit_pick``
conditional and atomic on its side. Either way there are two calls per selection.

Every method is a coroutine so a networked store fits the same interface. Records are
immutable: a store replaces them on change and may hand out live read-only views.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from lb_service.model import Agent, StrategyName

if TYPE_CHECKING:
    from lb_service.store.index import AgentIndex


@dataclass(frozen=True, slots=True)
class AgentStats:
    """Load history of one agent id; ``avg_latency_ms`` is None until the first sample."""

    active: int = 0
    avg_latency_ms: float | None = None
    last_request_at_ms: int = 0
    total_requests: int = 0
    failed_requests: int = 0


@dataclass(frozen=True, slots=True)
class Binding:
    """A sticky session's agent and when the session last used it."""

    agent_id: str
    last_used_ms: int


@dataclass(frozen=True, slots=True)
class Lease:
    """An open request: started on an agent and not yet ended or expired."""

    request_id: str
    agent_id: str
    started_at_ms: int


@dataclass(frozen=True, slots=True)
class PickState:
    """What one selection reads: a consistent snapshot of everything that decides it."""

    strategy: StrategyName
    agents: Mapping[str, Agent]
    stats: Mapping[str, AgentStats]
    weights: Mapping[str, float]
    binding: Binding | None
    sequence: int
    #: Bindings held (idle ones included until swept) and leases open, for the limits.
    session_count: int
    lease_count: int
    #: The registry indexed for picking, or None where a store keeps no index (the
    #: balancer then filters and ranks the registry on every pick).
    index: AgentIndex | None = None


@dataclass(frozen=True, slots=True)
class Pick:
    """A decision to write back: count the selection, maybe bind a session, maybe open a lease.

    When ``session_id`` is set and ``bind`` is true the session is (re)bound to the agent;
    when ``bind`` is false a binding to this same agent is only refreshed, and a binding to
    another agent (a spill-over) is left alone.
    """

    agent_id: str
    now_ms: int
    acquire: bool = False
    session_id: str = ""
    bind: bool = False


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """A finished request to record; ``smoothing`` is the moving-average factor."""

    agent_id: str
    request_id: str
    latency_ms: float
    failed: bool
    now_ms: int
    smoothing: float


class EndOutcome(enum.Enum):
    """What recording a request's end did."""

    CLOSED = "closed"  # an open lease was closed and the sample recorded
    ALREADY_ENDED = "already-ended"  # the lease was issued and has ended; nothing changed
    NO_OPEN_LEASE = "no-open-lease"  # no request_id and none open: latency recorded only
    UNKNOWN_REQUEST = "unknown-request"  # the request_id was never issued; nothing changed
    WRONG_AGENT = "wrong-agent"  # the lease belongs to another agent; nothing changed


@dataclass(frozen=True, slots=True)
class EndResult:
    """The outcome of recording an end, with the lease's agent when it matters."""

    outcome: EndOutcome
    lease_agent_id: str = ""


@dataclass(frozen=True, slots=True)
class Counters:
    """Service-wide counters kept by the store."""

    total_selections: int
    failed_selections: int
    total_requests: int
    latency_sum_ms: float
    latency_samples: int
    selections_by_agent: Mapping[str, int]


class Store(Protocol):
    """All mutable state of the balancer; every operation is atomic."""

    # Registry, weights and strategy.
    async def put_agent(self, agent: Agent) -> None:
        """Add or replace an agent, keeping its position, history and weight override."""
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

    async def set_weights(self, weights: Mapping[str, float]) -> None:
        """Apply all the overrides at once."""
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

    # Selection.
    async def pick_state(self, session_id: str) -> PickState:
        """Snapshot what a selection needs, including the session's binding if any."""
        ...

    async def commit_pick(self, pick: Pick) -> str:
        """Record a selection; returns the new lease's request_id when acquiring, else ''."""
        ...

    async def record_failed_selection(self) -> None:
        """Count a selection that found no agent."""
        ...

    # Requests and leases.
    async def open_lease(self, agent_id: str, now_ms: int) -> str:
        """Record a request start on the agent; returns the new lease's request_id."""
        ...

    async def end_request(self, end: RequestEnd) -> EndResult:
        """Record a request end (see EndOutcome); changes nothing unless it succeeds."""
        ...

    async def expire_leases(self, started_before_ms: int) -> list[Lease]:
        """Close leases started before the cutoff as failed requests; returns them."""
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

    # Reads and change notification.
    async def stats(self) -> Mapping[str, AgentStats]:
        """Load history of every agent id ever seen, registered or candidate."""
        ...

    async def session_count(self) -> int:
        """Sticky-session bindings held."""
        ...

    async def leases(self) -> Mapping[str, Lease]:
        """Every open lease by request_id (read-only)."""
        ...

    async def counters(self) -> Counters:
        """Service-wide counters."""
        ...

    async def wait_for_change(self, seen_version: int) -> int:
        """Wait until the state version differs from ``seen_version``; return the new one."""
        ...

    def version(self) -> int:
        """The state version; it changes whenever the registry, weights, strategy or a load does."""
        ...

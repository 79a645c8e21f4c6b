"""The records the store hands out and takes in; its operations are in ``roles``.

The balancer reads a consistent snapshot with ``pick_state``, decides, then writes the
decision back with ``commit_pick``. An in-process store makes the pair atomic by never
suspending between them; a shared store (several replicas) makes ``commit_pick``
conditional and atomic on its side. Either way there are two calls per selection.

Every method is a coroutine so a networked store fits the same interface. Records are
immutable: a store replaces them on change and may hand out live read-only views.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from lb_service.health.state import HealthRecord
from lb_service.model import Agent, AgentHealth, StrategyName
from lb_service.reports import ReceivedReport

if TYPE_CHECKING:
    from lb_service.store.feedback import Feedback
    from lb_service.store.index import PoolLookup


@dataclass(frozen=True, slots=True)
class AgentStats:
    """Load history of one agent id; the latency figures are None until the first sample.

    ``lb_service.store.feedback`` defines how a finished request updates them.
    """

    active: int = 0
    avg_latency_ms: float | None = None
    last_request_at_ms: int = 0
    total_requests: int = 0
    failed_requests: int = 0
    #: Peak-EWMA latency estimate, and when its last sample came (the next one's weight).
    cost_ms: float | None = None
    cost_at_ms: int = 0
    #: Failures since the last success (or the last ejection).
    consecutive_failures: int = 0
    #: Ejected until this unix ms (in the past once it has come back; 0 = never ejected).
    ejected_until_ms: int = 0
    #: Ejections so far: the back-off multiplier (reset after a quiet max ejection time).
    times_ejected: int = 0
    #: When the agent was last registered while not registered before (slow start).
    joined_ms: int = 0
    # Capacity (see lb_service.capacity). Bookkeeping: all the time the agent had at
    # least one open lease, and when its active count last changed.
    busy_total_ms: float = 0.0
    activity_at_ms: int = 0
    #: The agent's parallel slots (``capacity.parallel_slots``, stamped when it registers;
    #: 1 for a candidate never registered): busy time counts the share of them in use.
    slots: int = 1
    #: Whether ``slots`` is learned (none declared): from ``overtaken_at``, per level
    #: ``k`` the completion count at which a completion last overtook ``k + 1`` or more
    #: leases opened before it (``capacity.completed``).
    learn_slots: bool = True
    overtaken_at: tuple[int, ...] = ()
    #: Leases closed by a reported end (the estimate is trusted after a few).
    completions: int = 0
    #: The estimate: decayed completions and the busy time they took, and the
    #: ``busy_total_ms`` they were folded at.
    cap_done: float = 0.0
    cap_busy_ms: float = 0.0
    cap_mark_ms: float = 0.0
    #: Picks made without a lease and not yet confirmed by a start or held out
    #: (``lb_service.store.pending``): load the active count does not show yet.
    pending: int = 0
    #: Model cost (see lb_service.model_cost), most recently sampled last: per model,
    #: (model, mean log latency of its successes, their number, its decayed share).
    model_latency: tuple[tuple[str, float, int, float], ...] = ()

    @property
    def in_flight(self) -> int:
        """The requests decisions count on the agent: open leases and pending picks."""
        return self.active + self.pending


_PENDING_FIELD = [f.name for f in fields(AgentStats)].index("pending")


def _copier() -> Callable[[AgentStats, int], AgentStats]:
    """``with_pending``: one line per field, generated as dataclasses generates ``__init__``.

    ``dataclasses.replace`` walks the fields and calls ``__init__`` (about three times
    the cost); a loop over the names with ``getattr`` about half as much again.
    """
    lines = [
        "def with_pending(stats, pending):",
        "    copy = new(AgentStats)",
        *(f"    set(copy, {f.name!r}, stats.{f.name})" for f in fields(AgentStats)),
        "    set(copy, 'pending', pending)",
        "    return copy",
    ]
    del lines[2 + _PENDING_FIELD]  # set last, from the argument
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "set": object.__setattr__,
        "AgentStats": AgentStats,
    }
    exec("\n".join(lines), namespace)  # built from the record's own field names
    copier: Callable[[AgentStats, int], AgentStats] = namespace["with_pending"]
    return copier


#: ``replace(stats, pending=pending)`` at a third of its cost: it runs twice on every pick.
with_pending = _copier()


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
    #: The model the request asked for ("" when not told): what its end teaches; None
    #: when it opened behind a full set of slots, so its end teaches no model cost
    #: (``model_cost.lesson``).
    model: str | None = ""


#: The default of an empty mapping field (read only, so one can be shared).
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class PickState(NamedTuple):
    """What one selection reads: a consistent snapshot of everything that decides it.

    A NamedTuple, as ``Pick``: one is built per selection, and a frozen dataclass's
    ``__init__`` (a Python call per field) cost four times as much.
    """

    strategy: StrategyName
    agents: Mapping[str, Agent]
    stats: Mapping[str, AgentStats]
    weights: Mapping[str, float]
    binding: Binding | None
    sequence: int
    #: Bindings held (idle ones included until swept) and leases open, for the limits.
    session_count: int
    lease_count: int
    #: Agents ejected (by ``ejected_until_ms``), possibly including some whose time is up.
    ejections: Mapping[str, int] = _EMPTY
    #: Whether loads may change between this read and the commit (other replicas write
    #: the same store): the balancer then passes its contenders to ``commit_pick``.
    shared: bool = False
    #: The store's index, if it keeps one (``store.index``): the pool of the registered
    #: agents meeting a task, which a decision reads instead of scanning the registry.
    pool: PoolLookup | None = None
    #: Registered agents that are not healthy (``health.state``): UNHEALTHY or DRAINING.
    out: Mapping[str, AgentHealth] = _EMPTY
    #: Each agent's freshest load report, whatever its age (``lb_service.reports``).
    reports: Mapping[str, ReceivedReport] = _EMPTY
    #: When the newest of them arrived (unix ms; 0: not known), so that a decision can
    #: tell at once that none is fresh instead of walking them all.
    reports_newest_ms: int = 0


class Registered(enum.Enum):
    """What ``put_agent`` did with an agent it accepted."""

    ADDED = "added"  # the id was not registered
    CHANGED = "changed"  # the id was registered with other fields; they are replaced
    UNCHANGED = "unchanged"  # registered exactly so already (dispatchers re-register often)


class Limit(enum.Enum):
    """A limit a store operation refused to go past; the operation changed nothing.

    Each operation that could grow the state checks its limit in the same atomic step
    that grows it, so the limit holds however many replicas share the store.
    """

    AGENTS = "max_agents"  # registered agents (put_agent of a new id)
    LEASES = "max_leases"  # open leases (open_lease, commit_pick with acquire)
    SESSIONS = "max_sessions"  # sticky-session bindings (commit_pick binding a new session)


class UnknownAgent(NamedTuple):
    """An agent id an operation was told to require and the store does not know; nothing changed.

    Checked in the same atomic step as the operation, so no replica acts on an id
    another replica removed meanwhile. What "know" means is the operation's: registered
    (``set_weights``), or registered or holding a load record (``open_lease``,
    ``end_request``).
    """

    agent_id: str


class HealthWrite(enum.Enum):
    """What ``put_health`` did."""

    APPLIED = "applied"
    #: The record was not the one expected (another writer came first); nothing changed.
    CONFLICT = "conflict"
    #: The agent is not registered; nothing changed.
    UNKNOWN_AGENT = "unknown-agent"


class Contender(NamedTuple):
    """An agent a shared store may commit instead of the chosen one, if it ranks better then.

    The chosen one (``Pick.agent_id``, a contender too) stands while it ranks among the
    lowest at commit; otherwise the lowest is committed, ties in turn by the sequence.

    Its rank at commit is ``(tier, max(floor, per_request x (active + 1) + offset))``
    over the agent's live count of requests in flight (``AgentStats.in_flight``, as the
    decision counted them; its room is checked on the same count): the strategy's own
    rank in linear form (``strategies.base.LoadRank``), computed by the balancer, so the
    store applies one generic comparison and no strategy rule is written twice.
    """

    agent_id: str
    #: 0 means no limit; a contender at its limit at commit time is passed over.
    max_connections: int = 0
    tier: float = 0.0
    per_request: float = 0.0
    offset: float = 0.0
    floor: float = 0.0


class Pick(NamedTuple):
    """A decision to write back: count the selection, maybe bind a session, maybe open a lease.

    When ``session_id`` is set and ``bind`` is true the session is (re)bound to the agent;
    when ``bind`` is false a binding to this same agent is only refreshed, and a binding to
    another agent (a spill-over) is left alone. A NamedTuple: one is built per selection.
    """

    agent_id: str
    now_ms: int
    acquire: bool = False
    session_id: str = ""
    bind: bool = False
    #: For a shared store: the agents the strategy chose among (the chosen one included;
    #: of a full scan, the ones it ranked lowest: ``balancer.inputs.RERANK_LIMIT``) with
    #: their ranks, re-ranked on the loads at commit so concurrent picks through other
    #: replicas cannot herd onto one agent. Empty: commit ``agent_id`` as it is (a store
    #: still skips it when full, only then returning None).
    contenders: tuple[Contender, ...] = ()
    #: With ``bind``: a binding made meanwhile by another replica and used at or after
    #: this time is live, and wins (a session binds once); older ones are replaced.
    fresh_since_ms: int = 0
    #: The session's binding as ``pick_state`` showed it: the one the balancer chose to
    #: replace, which a shared store must tell apart from one made meanwhile.
    seen: Binding | None = None
    #: Limits checked in the commit's atomic step (0 = none): with ``acquire``, the open
    #: leases; when binding a session that holds no binding, the bindings held.
    max_leases: int = 0
    max_sessions: int = 0
    #: The task's model, kept on the lease so its end is learned per model.
    model: str = ""
    #: Without ``acquire``: the pick counts as pending on its agent until this unix ms,
    #: or until a start is reported there (``lb_service.store.pending``); 0 = not at all.
    hold_until_ms: int = 0


class Committed(NamedTuple):
    """What ``commit_pick`` recorded: the agent, and the lease's request_id when acquiring.

    A shared store may have committed another contender, or a binding made meanwhile.
    A NamedTuple because one is built per selection, in C.
    """

    agent_id: str
    request_id: str = ""
    #: True when a binding made by a concurrent pick decided (the session binds once).
    sticky: bool = False


@dataclass(frozen=True, slots=True)
class RequestEnd:
    """A finished request to record, with the rules that fold it into the agent's figures."""

    agent_id: str
    request_id: str
    latency_ms: float
    failed: bool
    now_ms: int
    feedback: Feedback
    #: Without ``request_id``: an agent neither registered nor holding a load record is
    #: refused (``EndOutcome.UNKNOWN_AGENT``) in the same step that would record the end.
    only_known: bool = False


class EndOutcome(enum.Enum):
    """What recording a request's end did."""

    CLOSED = "closed"  # an open lease was closed and the sample recorded
    ALREADY_ENDED = "already-ended"  # the lease was issued and has ended; nothing changed
    NO_OPEN_LEASE = "no-open-lease"  # no request_id and none open: latency recorded only
    UNKNOWN_REQUEST = "unknown-request"  # the request_id was never issued; nothing changed
    WRONG_AGENT = "wrong-agent"  # the lease belongs to another agent; nothing changed
    UNKNOWN_AGENT = "unknown-agent"  # only_known, no request_id, agent not known; nothing changed


@dataclass(frozen=True, slots=True)
class EndResult:
    """The outcome of recording an end, with the lease's agent when it matters."""

    outcome: EndOutcome
    lease_agent_id: str = ""
    #: The agent the end was recorded for (CLOSED and NO_OPEN_LEASE only).
    agent_id: str = ""
    #: When this end ejected the agent: until when (unix ms), else 0.
    ejected_until_ms: int = 0
    #: When this end ejected the agent: the failures in a row that did it.
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Configuration:
    """The registry and weight overrides as of one instant (what ``set_weights`` left)."""

    agents: Mapping[str, Agent]
    weights: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Counters:
    """Service-wide counters kept by the store."""

    total_selections: int
    failed_selections: int
    total_requests: int
    latency_sum_ms: float
    latency_samples: int
    selections_by_agent: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Overview:
    """Everything GetLoads and GetStatistics read, as of one instant (one store call)."""

    strategy: StrategyName
    agents: Mapping[str, Agent]
    weights: Mapping[str, float]
    #: Every agent id ever seen, as ``Store.stats``.
    stats: Mapping[str, AgentStats]
    counters: Counters
    #: Health records of the registered agents that have one (``health.state``).
    health: Mapping[str, HealthRecord] = field(default_factory=dict)
    #: Each registered agent's freshest load report, whatever its age.
    reports: Mapping[str, ReceivedReport] = field(default_factory=dict)

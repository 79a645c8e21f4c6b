"""Plain domain values: agents, tasks, loads, selections, statistics (no protobuf here)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


class StrategyName(enum.Enum):
    """The selection strategies, spelled as users write them in flags and config."""

    ROUND_ROBIN = "round-robin"
    LEAST_CONNECTIONS = "least-connections"
    WEIGHTED = "weighted"
    LATENCY_BASED = "latency-based"
    CAPABILITY_MATCH = "capability-match"


class Compute(enum.Enum):
    """The kind of hardware a task needs."""

    ANY = "any"
    CPU = "cpu"
    GPU = "gpu"


class Engine(enum.Enum):
    """The serving software on an agent: how the service probes it (unspecified: not probed)."""

    UNSPECIFIED = ""
    OLLAMA = "ollama"
    VLLM = "vllm"
    SGLANG = "sglang"
    HTTP = "http"
    GRPC = "grpc"


class AgentHealth(enum.Enum):
    """Whether an agent takes new picks, as probes, heartbeats and drains decided."""

    HEALTHY = "healthy"
    #: No new picks (probes failed, heartbeat missed, not yet probed), except in panic
    #: mode: when every eligible agent is unhealthy they are picked among all the same.
    UNHEALTHY = "unhealthy"
    #: No new picks until undrained; open leases end normally.
    DRAINING = "draining"


@dataclass(frozen=True, slots=True)
class Hardware:
    """An agent's machine: GPU model and memory, CPU cores, system memory."""

    gpu: str = ""
    vram_gb: float = 0.0
    cpu_cores: int = 0
    ram_gb: float = 0.0

    @property
    def has_gpu(self) -> bool:
        """Whether the agent has a GPU (memory reported or a GPU model named)."""
        return self.vram_gb > 0 or bool(self.gpu)


@dataclass(frozen=True, slots=True)
class Agent:
    """A worker host that takes requests; ``max_connections == 0`` means no limit.

    ``parallel_slots`` is how many requests it serves at once (the rest wait in its own
    queue); 0 leaves it to ``capacity.parallel_slots`` to guess. It is no limit.
    """

    id: str
    host: str = ""
    port: int = 0
    models: tuple[str, ...] = ()
    hardware: Hardware = field(default_factory=Hardware)
    metadata: Mapping[str, str] = field(default_factory=dict)
    max_connections: int = 0
    parallel_slots: int = 0
    #: The serving software: how the service probes it (``UNSPECIFIED``: not probed).
    engine: Engine = Engine.UNSPECIFIED
    #: The agent heartbeats at least this often (ms); 0 = it sends none.
    heartbeat_ttl_ms: int = 0
    #: For ``Engine.HTTP``: the path probed with GET; empty means "/".
    probe_path: str = ""

    @property
    def default_weight(self) -> float:
        """Weight before any override: VRAM in GB when known, else 1.

        CPU-only and unknown-hardware agents get 1 so they still receive traffic
        (a pure sum-of-VRAM rule would give them nothing, or divide by zero).
        """
        return self.hardware.vram_gb if self.hardware.vram_gb > 0 else 1.0


@dataclass(frozen=True, slots=True)
class Task:
    """What a request needs from the agent that takes it; defaults accept any agent."""

    model: str = ""
    min_vram_gb: float = 0.0
    compute: Compute = Compute.ANY


@dataclass(frozen=True, slots=True)
class SelectionRequest:
    """One pick to make, as SelectAgent asks for it (SelectAgents takes several)."""

    task: Task = Task()
    session_id: str = ""
    candidates: tuple[Agent, ...] = ()
    acquire: bool = False


def _no_metrics() -> Mapping[str, float]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One report of an agent's load; None for a figure the reporter does not know.

    ``loaded_models`` empty means none loaded, or not known (Ollama's ``/api/ps`` knows;
    vLLM's metrics do not say).
    """

    queued_requests: int | None = None
    running_requests: int | None = None
    kv_cache_usage: float | None = None
    loaded_models: tuple[str, ...] = ()
    cpu_utilization: float | None = None
    gpu_utilization: float | None = None
    named_metrics: Mapping[str, float] = field(default_factory=_no_metrics)

    @property
    def requests(self) -> int | None:
        """Queued plus running requests; None when the report states neither."""
        if self.queued_requests is None and self.running_requests is None:
            return None
        return (self.queued_requests or 0) + (self.running_requests or 0)


@dataclass(frozen=True, slots=True)
class AgentLoad:
    """An agent's load as reported to clients."""

    agent_id: str
    active_connections: int
    avg_latency_ms: float
    last_request_at_ms: int
    total_requests: int
    failed_requests: int
    weight: float
    #: Unix ms until which outlier ejection keeps the agent out of picks; 0 = not ejected.
    ejected_until_ms: int = 0
    #: Learned capacity, requests per second while busy (``lb_service.capacity``); 0 until
    #: enough requests have completed to trust it.
    capacity_rps: float = 0.0
    #: Requests it serves at once as decisions count them (``capacity.ranked_slots``):
    #: declared, else learned, the guess until ``capacity_rps`` is; 0 from a server
    #: that does not say.
    parallel_slots: int = 0
    #: Whether the agent takes new picks; ``health_reason`` says why not (empty if healthy).
    health: AgentHealth = AgentHealth.HEALTHY
    health_reason: str = ""
    #: The agent's freshest load report, whatever its age (None: it never sent one),
    #: and its age when read. The age is left out of comparisons, so a watcher is not
    #: sent loads that differ only in how old the same report has grown.
    report: LoadReport | None = None
    report_age_ms: int = field(default=0, compare=False)

    @property
    def ejected(self) -> bool:
        """Whether outlier ejection keeps the agent out of picks now."""
        return self.ejected_until_ms > 0


@dataclass(frozen=True, slots=True)
class LoadSnapshot:
    """The loads of a set of agents at one moment (unix ms), as WatchLoads streams them."""

    loads: tuple[AgentLoad, ...]
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Selection:
    """The answer to a pick: the agent, its lease when acquired, and how it was decided."""

    agent: Agent
    strategy: StrategyName
    sticky: bool = False
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class Statistics:
    """Service-wide counters."""

    strategy: StrategyName
    total_selections: int
    failed_selections: int
    total_requests: int
    active_connections: int
    avg_latency_ms: float
    selections_by_agent: Mapping[str, int]

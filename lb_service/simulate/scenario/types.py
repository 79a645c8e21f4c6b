"""The values a validated scenario is made of, from service times to the whole ``Scenario``.

Everything here is frozen and already checked: the readers beside this module
(``cluster``, ``workload``, ``faults``, ``policies``, ``targets``, joined by ``read``)
build these values from a YAML document, and the engine, the workload generator and the
judging of targets only ever see them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lb_service.model import Agent, Task
from lb_service.simulate.policies import PolicySpec

#: The z-score of the 99th percentile of a normal distribution: turns (median, p99) into
#: the sigma of a lognormal.
_Z99 = 2.3263478740408408


@dataclass(frozen=True, slots=True)
class ServiceTime:
    """A lognormal service-time distribution on a speed-1.0 agent, in milliseconds."""

    mu: float
    sigma: float

    @property
    def mean_ms(self) -> float:
        """The distribution's mean, which capacity is computed from."""
        return math.exp(self.mu + self.sigma**2 / 2)

    @property
    def median_ms(self) -> float:
        """The distribution's median."""
        return math.exp(self.mu)

    @classmethod
    def from_median_p99(cls, median: float, p99: float) -> ServiceTime:
        """The lognormal with this median and 99th percentile."""
        return cls(math.log(median), math.log(p99 / median) / _Z99)

    @classmethod
    def from_mean_sigma(cls, mean: float, sigma: float) -> ServiceTime:
        """The lognormal with this mean and log-space standard deviation."""
        return cls(math.log(mean) - sigma**2 / 2, sigma)


@dataclass(frozen=True, slots=True)
class SimAgent:
    """An agent as registered with the balancer, plus what only the simulator knows."""

    agent: Agent
    #: Work done per unit of time relative to the reference (1.0) host; service time on
    #: this agent = the request's base service time / speed.
    speed: float
    #: Requests served in parallel (e.g. OLLAMA_NUM_PARALLEL); more wait in a FIFO queue.
    slots: int
    #: Time to load a model that is not in memory before serving it (Ollama's first use
    #: of a model; 0: models are always ready, nothing is modelled).
    load_ms: float = 0.0
    #: Models held in memory at once (OLLAMA_MAX_LOADED_MODELS); loading one more evicts
    #: the least recently used.
    max_loaded_models: int = 3


@dataclass(frozen=True, slots=True)
class RequestType:
    """One entry of the model mix: what the request needs and its share of traffic."""

    task: Task
    share: float


@dataclass(frozen=True, slots=True)
class Burst:
    """From ``at_s`` for ``duration_s`` the arrival rate is multiplied by ``factor``."""

    at_s: float
    duration_s: float
    factor: float


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """A client of the balancer; its starts and ends reach the balancer ``report_delay_ms`` late."""

    share: float
    report_delay_ms: float


@dataclass(frozen=True, slots=True)
class Bypass:
    """Requests that go to agents directly, so the balancer never sees them.

    A ``share`` of all arrivals is sent, instead of being balanced, to one of ``agents``
    (ids of the cluster) that can serve it, at random; a request none of them can serve
    is balanced as usual. With ``during``, only arrivals within one of those windows
    ((start, end) in simulated seconds) bypass: a batch job that comes and goes. The
    balancer learns of that load only from agents' reports.
    """

    share: float
    agents: tuple[str, ...]
    during: tuple[tuple[float, float], ...] = ()

    def active(self, t_s: float) -> bool:
        """Whether arrivals at ``t_s`` may bypass (always, without windows)."""
        return not self.during or any(start <= t_s < end for start, end in self.during)


@dataclass(frozen=True, slots=True)
class Reports:
    """Agents' load reports (``lb_service.reports``): queued and running requests.

    Every agent reports every ``interval_ms``; a report reaches the balancer
    ``delay_ms`` after it was taken. None in a scenario: agents send no reports.
    """

    interval_ms: float
    delay_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Workload:
    """How requests arrive: rate (or utilisation), mix, sessions, bursts and dispatchers."""

    mix: tuple[RequestType, ...]
    dispatchers: tuple[Dispatcher, ...]
    #: Exactly one of the two is set.
    utilisation: float | None = None
    rate_per_s: float | None = None
    session_share: float = 0.0
    session_pool: int = 0
    bursts: tuple[Burst, ...] = ()
    bypass: Bypass | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    """Something that happens to one agent at a simulated time.

    ``slow``: requests that start service in [at_s, until_s) take ``factor`` times longer.
    ``fail``: requests that start service in [at_s, until_s) end failed after ``fail_ms``;
    with ``in_flight == "fail"`` (a crash) those in service or queued at ``at_s`` fail
    too, ``fail_ms`` later; with ``"finish"`` they complete as if nothing happened.
    ``join``: the agent is registered only at ``at_s`` (it exists but is unknown before).
    """

    agent_id: str
    kind: str
    at_s: float
    until_s: float = math.inf
    factor: float = 1.0
    fail_ms: float = 5.0
    in_flight: str = "fail"


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target to judge after the run (``lb_service/simulate/targets.py`` says each kind)."""

    kind: str
    threshold: float
    policy: str = ""
    baseline: str = ""
    #: Index into the scenario's faults, for the fault targets (-1: the first of its kind).
    fault: int = -1


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario, ready to simulate."""

    name: str
    description: str
    seed: int
    duration_s: float
    warmup_s: float
    sweep_interval_s: float
    #: None: 200 samples over the run, whatever its duration.
    sample_interval_s: float | None
    service: Mapping[str, ServiceTime]
    agents: tuple[SimAgent, ...]
    workload: Workload
    faults: tuple[Fault, ...]
    balancer: Mapping[str, Any]
    policies: tuple[PolicySpec, ...] | None
    targets: tuple[TargetSpec, ...]
    reports: Reports | None = None


#: The kinds of ``faults`` entries (``Fault`` says what each does).
FAULT_KINDS = ("slow", "fail", "join")
#: The kinds of ``targets`` entries (``lb_service/simulate/targets.py`` judges them).
TARGET_KINDS = ("p99-vs-oracle", "p99-ratio", "traffic-shift", "ejection", "affinity")

"""Scenario files: a cluster, a workload, faults, the policies to compare and the targets.

A scenario is one YAML document (see ``scenarios/*.yaml`` for commented examples)::

    name, description, seed, duration_s, warmup_s, sweep_interval_s, sample_interval_s
    models:    {MODEL: {service_ms: {median, p99} | {mean, sigma}}}
    cluster:   [agent, ...] or "path/to/cluster.yaml" (a file holding that list)
    workload:  {utilisation | rate_per_s, mix, sessions, bursts, dispatchers}
    faults:    [{agent, at_s, kind: slow | fail | join, factor, fail_ms, in_flight, until_s}]
    balancer:  {BalancerConfig option: value}  (every balancer policy but ``default``)
    policies:  [NAME | {name, strategy | reference, options}]  (default: all built-in)
    targets:   [{kind, ...}]

Every field is checked here, once; a mistake raises ``ScenarioError`` whose message starts
with the field's path (``workload.mix[1].share: ...``), so the command can print one line
a user can act on. Unknown keys are mistakes too: a typo must not silently fall back to a
default and simulate something other than what the user wrote.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lb_service.balancer import BalancerConfig
from lb_service.model import Agent, Compute, Hardware, StrategyName, Task
from lb_service.requirements import meets

# ScenarioError is re-exported: every caller reads scenarios through this module.
from lb_service.simulate.document import Node, names, read_yaml, suggest
from lb_service.simulate.document import ScenarioError as ScenarioError
from lb_service.simulate.policies import DEFAULT_POLICIES, REFERENCES, PolicySpec
from lb_service.validation import MAX_PARALLEL_SLOTS

#: The z-score of the 99th percentile of a normal distribution: turns (median, p99) into
#: the sigma of a lognormal.
_Z99 = 2.3263478740408408
#: Most entries in workload.mix: capacity is computed over every subset of them.
MAX_MIX = 12
#: Most agents a scenario may define (after ``count`` expansion); keeps a run bounded.
MAX_AGENTS = 2000


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
    """A target to judge after the run (see ``targets.py`` for the kinds)."""

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


FAULT_KINDS = ("slow", "fail", "join")
TARGET_KINDS = ("p99-vs-oracle", "p99-ratio", "traffic-shift", "ejection", "affinity")
#: BalancerConfig options a scenario may not set: they bound memory, not behaviour.
_FIXED_OPTIONS = frozenset({"max_candidates", "max_agents", "max_sessions", "max_leases"})


def load(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    document = read_yaml(path, "")
    return parse(document, path.parent)


def parse(document: Any, base_dir: Path = Path()) -> Scenario:
    """Validate a document as YAML loads it; a ``cluster`` file path resolves from ``base_dir``."""
    top = Node(document, "")
    top.only(
        "name",
        "description",
        "seed",
        "duration_s",
        "warmup_s",
        "sweep_interval_s",
        "sample_interval_s",
        "models",
        "cluster",
        "workload",
        "faults",
        "balancer",
        "policies",
        "targets",
    )
    duration = top.number("duration_s", 60.0, low=0, low_open=True)
    warmup = top.number("warmup_s", 0.0, low=0)
    if warmup >= duration:
        raise ScenarioError(
            "warmup_s", f"must be less than duration_s ({duration:g}), got {warmup:g}"
        )
    service = service_times(top.child("models", required=True))
    agents = _cluster(top.child("cluster", required=True), service, base_dir)
    workload = _workload(top.child("workload", required=True), agents)
    ids = {a.agent.id for a in agents}
    faults = tuple(_fault(node, ids) for node in top.child("faults", default=[]).items())
    for n, fault in enumerate(faults):
        # One join per agent, and one fail fault: ejection is watched once per agent.
        if fault.kind in ("join", "fail") and any(
            (f.kind, f.agent_id) == (fault.kind, fault.agent_id) for f in faults[:n]
        ):
            raise ScenarioError(
                f"faults[{n}].agent", f"{fault.agent_id!r} has more than one {fault.kind} fault"
            )
    balancer = _options(top.child("balancer", default={}))
    policies_node = top.child("policies", default=None)
    policies = None if policies_node.value is None else _policies(policies_node)
    targets = tuple(_target(node) for node in top.child("targets", default=[]).items())
    _check_targets(
        targets, policies if policies is not None else DEFAULT_POLICIES, faults, workload
    )
    return Scenario(
        name=top.string("name", "scenario"),
        description=top.string("description", ""),
        seed=top.integer("seed", 1, low=0),
        duration_s=duration,
        warmup_s=warmup,
        sweep_interval_s=top.number("sweep_interval_s", 1.0, low=0, low_open=True),
        sample_interval_s=(
            top.number("sample_interval_s", None, low=0, low_open=True)
            if top.has("sample_interval_s")
            else None
        ),
        service=service,
        agents=agents,
        workload=workload,
        faults=faults,
        balancer=balancer,
        policies=policies,
        targets=targets,
    )


# --- command-line overrides ----------------------------------------------------------


#: The highest utilisation ``--utilisation`` may ask for, as for ``workload.utilisation``.
MAX_UTILISATION = 2.0


def with_utilisation(scenario: Scenario, utilisation: float) -> Scenario:
    """The scenario with ``workload.utilisation`` replaced (``--utilisation``).

    A scenario that gives ``rate_per_s`` instead has no utilisation to replace: that is
    a ScenarioError naming ``workload.rate_per_s``, not a silent switch of meaning.
    """
    if scenario.workload.utilisation is None:
        raise ScenarioError(
            "workload.rate_per_s",
            "--utilisation replaces workload.utilisation, but this scenario gives rate_per_s",
        )
    if not 0 < utilisation <= MAX_UTILISATION:
        raise ScenarioError(
            "workload.utilisation",
            f"must be > 0 and <= {MAX_UTILISATION:g}, got {utilisation!r}",
        )
    workload = dataclasses.replace(scenario.workload, utilisation=utilisation)
    return dataclasses.replace(scenario, workload=workload)


# --- sections ------------------------------------------------------------------------


def service_times(node: Node) -> dict[str, ServiceTime]:
    """The ``models`` section: each model's service time on a speed-1.0 agent."""
    if not node.mapping():
        raise ScenarioError(node.path, "must name at least one model")
    found = {}
    for name, model in node.entries():
        model.only("service_ms")
        spec = model.child("service_ms", required=True)
        spec.mapping()
        if spec.has("median"):
            spec.only("median", "p99")
            median = spec.number("median", None, low=0, low_open=True)
            p99 = spec.number("p99", None, low=median, low_open=True)
            found[name] = ServiceTime.from_median_p99(median, p99)
        elif spec.has("mean"):
            spec.only("mean", "sigma")
            mean = spec.number("mean", None, low=0, low_open=True)
            found[name] = ServiceTime.from_mean_sigma(mean, spec.number("sigma", None, low=0))
        else:
            raise ScenarioError(spec.path, "give either {median, p99} or {mean, sigma}")
    return found


def default_speed(hardware: Hardware) -> float:
    """A rough speed from hardware alone, for agents whose ``speed`` is not given.

    Token generation is bound by memory bandwidth, which grows with the card's class,
    so a GPU counts sqrt(VRAM / 80 GB) (80 GB: 1.0, 24 GB: 0.55, 8 GB: 0.32); a
    CPU-only host counts cores / 400 (16 cores: 0.04, i.e. 25x slower than an 80 GB GPU).
    Give ``speed`` explicitly when you know better: it is what the simulation runs on.
    """
    if hardware.has_gpu:
        return math.sqrt(max(hardware.vram_gb, 1.0) / 80)
    return max(hardware.cpu_cores, 1) / 400


#: The keys of one entry of ``cluster``.
CLUSTER_KEYS = (
    "id",
    "count",
    "host",
    "port",
    "models",
    "hardware",
    "speed",
    "slots",
    "max_connections",
    "parallel_slots",
)


def cluster_entries(node: Node, base_dir: Path) -> list[Node]:
    """The entries of ``cluster``: its list, or the list in the file it names."""
    if isinstance(node.value, str):
        path = base_dir / node.value
        node = Node(read_yaml(path, node.path), f"{node.path}({node.value})")
    entries = node.items()
    if not entries:
        raise ScenarioError(node.path, "must list at least one agent")
    return entries


def _cluster(
    node: Node, service: Mapping[str, ServiceTime], base_dir: Path
) -> tuple[SimAgent, ...]:
    agents: list[SimAgent] = []
    seen: set[str] = set()
    for entry in cluster_entries(node, base_dir):
        agents.extend(cluster_entry(entry, service, seen))
    if len(agents) > MAX_AGENTS:
        raise ScenarioError(node.path, f"{len(agents)} agents; at most {MAX_AGENTS} are supported")
    return tuple(agents)


def cluster_entry(
    entry: Node,
    service: Mapping[str, ServiceTime],
    seen: set[str],
    extra_keys: Sequence[str] = (),
) -> list[SimAgent]:
    """The agents one ``cluster`` entry defines (``count`` of them); adds their ids to ``seen``.

    ``extra_keys`` are further keys the caller reads from the entry itself (the emulator's
    engine and faults); any other unknown key is an error.
    """
    entry.only(*CLUSTER_KEYS, *extra_keys)
    agents: list[SimAgent] = []
    base_id = entry.string("id", None)
    if not base_id:
        raise ScenarioError(f"{entry.path}.id", "must not be empty")
    count = entry.integer("count", 1, low=1)
    models_node = entry.child("models", required=True)
    models = tuple(m.text() for m in models_node.items())
    for n, model in enumerate(models):
        if model not in service:
            raise ScenarioError(
                f"{models_node.path}[{n}]",
                f"model {model!r} is not defined under models ({names(service)})",
            )
    hw = entry.child("hardware", default={})
    hw.only("gpu", "vram_gb", "cpu_cores", "ram_gb")
    hardware = Hardware(
        gpu=hw.string("gpu", ""),
        vram_gb=hw.number("vram_gb", 0.0, low=0),
        cpu_cores=hw.integer("cpu_cores", 0, low=0),
        ram_gb=hw.number("ram_gb", 0.0, low=0),
    )
    speed = entry.number("speed", default_speed(hardware), low=0, low_open=True)
    # Ollama runs 4 requests at once by default when memory allows, 1 otherwise;
    # a CPU-only host gains nothing from parallel slots.
    slots = entry.integer("slots", 4 if hardware.has_gpu else 1, low=1)
    max_connections = entry.integer("max_connections", 0, low=0)
    # What the balancer is told, as max_connections; `slots` is what the agent does.
    declared_slots = entry.integer("parallel_slots", 0, low=0, high=MAX_PARALLEL_SLOTS)
    host = entry.string("host", "")
    port = entry.integer("port", 11434, low=1, high=65535)
    for n in range(count):
        agent_id = base_id if count == 1 else f"{base_id}-{n + 1}"
        if agent_id in seen:
            raise ScenarioError(f"{entry.path}.id", f"agent id {agent_id!r} is used twice")
        seen.add(agent_id)
        agent = Agent(
            id=agent_id,
            host=host or f"{agent_id}.sim",
            port=port,
            models=models,
            hardware=hardware,
            max_connections=max_connections,
            parallel_slots=declared_slots,
        )
        agents.append(SimAgent(agent, speed, slots))
    return agents


def _workload(node: Node, agents: Sequence[SimAgent]) -> Workload:
    node.only("utilisation", "rate_per_s", "mix", "sessions", "bursts", "dispatchers")
    if node.has("utilisation") == node.has("rate_per_s"):
        raise ScenarioError(node.path, "give exactly one of utilisation and rate_per_s")
    utilisation = rate = None
    if node.has("utilisation"):
        utilisation = node.number("utilisation", None, low=0, low_open=True, high=2.0)
    else:
        rate = node.number("rate_per_s", None, low=0, low_open=True)
    mix_node = node.child("mix", required=True)
    mix = []
    for entry in mix_node.items():
        entry.only("model", "share", "min_vram_gb", "compute")
        compute_text = entry.string("compute", "any")
        try:
            compute = Compute(compute_text)
        except ValueError:
            raise ScenarioError(
                f"{entry.path}.compute",
                f"must be one of {', '.join(c.value for c in Compute)}, got {compute_text!r}",
            ) from None
        task = Task(
            model=entry.string("model", None),
            min_vram_gb=entry.number("min_vram_gb", 0.0, low=0),
            compute=compute,
        )
        if not any(meets(a.agent, task) for a in agents) and utilisation is not None:
            # With a utilisation the rate comes from capacity, which such a request has none of.
            raise ScenarioError(
                entry.path,
                "no agent in the cluster can take this request, so no utilisation can be "
                "reached; fix the cluster or give rate_per_s instead",
            )
        mix.append(RequestType(task, entry.number("share", None, low=0, low_open=True)))
    if not mix:
        raise ScenarioError(mix_node.path, "must list at least one request type")
    if len(mix) > MAX_MIX:
        raise ScenarioError(mix_node.path, f"at most {MAX_MIX} entries, got {len(mix)}")
    total = sum(t.share for t in mix)
    # Shares are relative weights: "60, 30, 10" and "0.6, 0.3, 0.1" mean the same.
    mix = [RequestType(t.task, t.share / total) for t in mix]
    sessions = node.child("sessions", default={})
    sessions.only("share", "pool")
    session_share = sessions.number("share", 0.0, low=0, high=1)
    pool = sessions.integer("pool", 100 if session_share else 0, low=0)
    if session_share and not pool:
        raise ScenarioError(f"{sessions.path}.pool", "must be at least 1 when share > 0")
    bursts = []
    for entry in node.child("bursts", default=[]).items():
        entry.only("at_s", "duration_s", "factor")
        bursts.append(
            Burst(
                entry.number("at_s", None, low=0),
                entry.number("duration_s", None, low=0, low_open=True),
                entry.number("factor", None, low=0),
            )
        )
    dispatchers = []
    for entry in node.child("dispatchers", default=[]).items():
        entry.only("count", "share", "report_delay_ms")
        count = entry.integer("count", 1, low=1, high=1000)
        share = entry.number("share", float(count), low=0, low_open=True)
        delay = entry.number("report_delay_ms", 0.0, low=0)
        dispatchers += [Dispatcher(share / count, delay)] * count
    if not dispatchers:
        dispatchers = [Dispatcher(1.0, 0.0)]
    total = sum(d.share for d in dispatchers)
    return Workload(
        mix=tuple(mix),
        dispatchers=tuple(Dispatcher(d.share / total, d.report_delay_ms) for d in dispatchers),
        utilisation=utilisation,
        rate_per_s=rate,
        session_share=session_share,
        session_pool=pool,
        bursts=tuple(bursts),
    )


def _fault(node: Node, ids: set[str]) -> Fault:
    node.only("agent", "kind", "at_s", "until_s", "factor", "fail_ms", "in_flight")
    agent_id = node.string("agent", None)
    if agent_id not in ids:
        raise ScenarioError(f"{node.path}.agent", f"no agent {agent_id!r} in the cluster")
    kind = node.string("kind", None)
    if kind not in FAULT_KINDS:
        raise ScenarioError(
            f"{node.path}.kind", f"must be one of {', '.join(FAULT_KINDS)}, got {kind!r}"
        )
    at_s = node.number("at_s", None, low=0)
    if kind == "join":
        node.only("agent", "kind", "at_s")
        return Fault(agent_id, kind, at_s)
    until_s = node.number("until_s", math.inf, low=at_s, low_open=True)
    if kind == "slow":
        node.only("agent", "kind", "at_s", "until_s", "factor")
        return Fault(
            agent_id, kind, at_s, until_s, factor=node.number("factor", None, low=0, low_open=True)
        )
    node.only("agent", "kind", "at_s", "until_s", "fail_ms", "in_flight")
    in_flight = node.string("in_flight", "fail")
    if in_flight not in ("fail", "finish"):
        raise ScenarioError(f"{node.path}.in_flight", f"must be fail or finish, got {in_flight!r}")
    return Fault(
        agent_id,
        kind,
        at_s,
        until_s,
        fail_ms=node.number("fail_ms", 5.0, low=0),
        in_flight=in_flight,
    )


def _options(node: Node) -> dict[str, Any]:
    """BalancerConfig options, checked against the balancer this lb-service was built with."""
    node.mapping()
    known = {f.name: f for f in dataclasses.fields(BalancerConfig)}
    options: dict[str, Any] = {}
    for key, value in node.entries():
        if key in _FIXED_OPTIONS:
            raise ScenarioError(
                value.path, "limits are not simulated; leave them at their defaults"
            )
        field = known.get(key)
        if field is None:
            raise ScenarioError(
                value.path,
                f"not an option of this lb-service's balancer{suggest(key, known)} "
                f"(options: {', '.join(sorted(set(known) - _FIXED_OPTIONS))})",
            )
        default = field.default
        raw = value.value
        if isinstance(default, bool):
            if not isinstance(raw, bool):
                raise ScenarioError(value.path, f"must be true or false, got {raw!r}")
        elif isinstance(default, int):
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise ScenarioError(value.path, f"must be a whole number, got {raw!r}")
        elif isinstance(default, float):
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ScenarioError(value.path, f"must be a number, got {raw!r}")
            raw = float(raw)
        options[key] = raw
    try:
        dataclasses.replace(BalancerConfig(), **options)
    except ValueError as error:
        raise ScenarioError(node.path, str(error)) from None
    return options


def _policies(node: Node) -> tuple[PolicySpec, ...]:
    defaults = {p.name: p for p in DEFAULT_POLICIES}
    found: list[PolicySpec] = []
    for entry in node.items():
        if isinstance(entry.value, str):
            spec = defaults.get(entry.value)
            if spec is None:
                raise ScenarioError(
                    entry.path,
                    f"unknown policy {entry.value!r}{suggest(entry.value, defaults)}; "
                    f"built-in: {', '.join(defaults)} (or define one with name and strategy)",
                )
        else:
            entry.only("name", "strategy", "reference", "options")
            name = entry.string("name", None)
            options = _options(entry.child("options", default={}))
            if entry.has("reference") == entry.has("strategy"):
                raise ScenarioError(entry.path, "give exactly one of strategy and reference")
            if entry.has("reference"):
                reference = entry.string("reference", None)
                if reference not in REFERENCES:
                    raise ScenarioError(
                        f"{entry.path}.reference",
                        f"must be one of {', '.join(REFERENCES)}, got {reference!r}",
                    )
                spec = PolicySpec(name, reference=reference)
            else:
                text = entry.string("strategy", None)
                try:
                    strategy = StrategyName(text)
                except ValueError:
                    raise ScenarioError(
                        f"{entry.path}.strategy",
                        f"must be one of {', '.join(s.value for s in StrategyName)}, got {text!r}",
                    ) from None
                spec = PolicySpec(name, strategy=strategy, options=options)
        if any(p.name == spec.name for p in found):
            raise ScenarioError(entry.path, f"policy {spec.name!r} is listed twice")
        found.append(spec)
    if not found:
        raise ScenarioError(node.path, "must list at least one policy (or leave it out for all)")
    return tuple(found)


def _target(node: Node) -> TargetSpec:
    kind = node.string("kind", None)
    if kind not in TARGET_KINDS:
        raise ScenarioError(
            f"{node.path}.kind", f"must be one of {', '.join(TARGET_KINDS)}, got {kind!r}"
        )
    if kind == "p99-vs-oracle":
        node.only("kind", "threshold", "policy")
        # Without a policy, the balancer policy with the lowest p99 is judged.
        return TargetSpec(
            kind,
            node.number("threshold", None, low=0, low_open=True),
            policy=node.string("policy", ""),
        )
    if kind == "affinity":
        node.only("kind", "threshold", "policy")
        return TargetSpec(
            kind,
            node.number("threshold", None, low=0, high=1),
            policy=node.string("policy", None),
        )
    if kind == "p99-ratio":
        node.only("kind", "threshold", "policy", "baseline")
        return TargetSpec(
            kind,
            node.number("threshold", None, low=0, low_open=True),
            policy=node.string("policy", None),
            baseline=node.string("baseline", None),
        )
    if kind == "traffic-shift":
        node.only("kind", "threshold_s", "policy", "fault")
        return TargetSpec(
            kind,
            node.number("threshold_s", None, low=0, low_open=True),
            policy=node.string("policy", None),
            fault=node.integer("fault", -1, low=0),
        )
    node.only("kind", "policy", "fault")
    # The threshold is the policy's own ejection_consecutive_failures, read at judging.
    return TargetSpec(
        kind, math.nan, policy=node.string("policy", None), fault=node.integer("fault", -1, low=0)
    )


def _check_targets(
    targets: Sequence[TargetSpec],
    policies: Sequence[PolicySpec],
    faults: Sequence[Fault],
    workload: Workload,
) -> None:
    """Targets must name policies the scenario runs and what they measure must happen."""
    names = [p.name for p in policies]
    for n, target in enumerate(targets):
        for key in ("policy", "baseline"):
            name = getattr(target, key)
            if name and name not in names:
                raise ScenarioError(
                    f"targets[{n}].{key}",
                    f"policy {name!r} is not run by this scenario ({', '.join(names)})",
                )
        if target.kind == "p99-vs-oracle" and "oracle" not in names:
            raise ScenarioError(f"targets[{n}].kind", "needs the oracle policy in policies")
        if target.kind == "affinity" and not workload.session_share:
            raise ScenarioError(
                f"targets[{n}].kind", "needs sessions in the workload (workload.sessions.share)"
            )
        if target.kind in ("traffic-shift", "ejection"):
            kind = "slow" if target.kind == "traffic-shift" else "fail"
            if target.fault >= 0:
                if target.fault >= len(faults) or faults[target.fault].kind != kind:
                    raise ScenarioError(
                        f"targets[{n}].fault", f"must be the index of a {kind} fault in faults"
                    )
            elif not any(f.kind == kind for f in faults):
                raise ScenarioError(f"targets[{n}].kind", f"needs a {kind} fault in faults")

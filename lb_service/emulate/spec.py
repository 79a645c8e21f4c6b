"""Emulator files: the simulator's cluster format plus each agent's engine, queue and fault.

An emulator file is a YAML document (``examples/emulated-fleet.yaml`` is a commented one)::

    seed:     1                                   # the service-time draws (default 1)
    models:   {MODEL: {service_ms: {median, p99} | {mean, sigma}}}
    cluster:  [agent, ...] or "path/to/cluster.yaml"

Each agent takes the simulator's keys (``id``, ``count``, ``models``, ``hardware``,
``speed``, ``slots``, ``port``, ``max_connections``, ``parallel_slots``, ``load_ms``:
model load time (Ollama; default 0), ``max_loaded_models`` (OLLAMA_MAX_LOADED_MODELS, 3);
``host`` is ignored: the emulator serves on its own address) and these:

    engine: ollama | vllm     (default ollama)
    fault: ok | slow | failing | dead | hung, slow_factor: N (default 10)
    max_queue (OLLAMA_MAX_QUEUE, 512)

Without ``port`` an agent listens on a free port; with it, an entry of ``count`` agents
takes ``port``, ``port + 1``, ... A scenario file can be emulated as it is: its other
sections (workload, faults, targets, ...) are the simulator's and are ignored here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lb_service.model import Engine
from lb_service.simulate.document import Node, ScenarioError, read_yaml
from lb_service.simulate.scenario import (
    MAX_AGENTS,
    ServiceTime,
    SimAgent,
    cluster_entries,
    cluster_entry,
    service_times,
)

__all__ = ["ENGINES", "FAULTS", "EmulatedAgent", "EmulatorSpec", "Fault", "load", "parse"]

#: What an emulated agent can be made to do (``ok`` is no fault).
FAULTS = ("ok", "slow", "failing", "dead", "hung")
#: The engines the emulator speaks.
ENGINES = {"ollama": Engine.OLLAMA, "vllm": Engine.VLLM}
#: The keys an emulator file adds to a cluster entry.
_AGENT_KEYS = ("engine", "fault", "slow_factor", "max_queue")
#: The simulator's top-level keys, ignored so that a scenario file can be emulated.
_SIMULATOR_KEYS = (
    "name",
    "description",
    "duration_s",
    "warmup_s",
    "sweep_interval_s",
    "sample_interval_s",
    "workload",
    "faults",
    "balancer",
    "policies",
    "targets",
)


@dataclass(frozen=True, slots=True)
class Fault:
    """What an agent is made to do (``ok``: nothing wrong).

    ``slow``: ``factor`` times its service time; ``failing``: every request answered 500;
    ``dead``: its port closed; ``hung``: it accepts connections and never answers.
    """

    kind: str = "ok"
    factor: float = 10.0


@dataclass(frozen=True, slots=True)
class EmulatedAgent:
    """One agent to serve: the simulator's agent (models, hardware, speed, slots) and more."""

    sim: SimAgent
    engine: Engine
    #: 0: any free port.
    port: int
    fault: Fault
    max_queue: int

    @property
    def id(self) -> str:
        """The agent's id."""
        return self.sim.agent.id

    @property
    def load_ms(self) -> float:
        """Time to load a model not in memory (the cluster entry's, as the simulator reads it)."""
        return self.sim.load_ms

    @property
    def max_loaded_models(self) -> int:
        """Models held in memory at once (OLLAMA_MAX_LOADED_MODELS)."""
        return self.sim.max_loaded_models


@dataclass(frozen=True, slots=True)
class EmulatorSpec:
    """A validated emulator file."""

    seed: int
    service: Mapping[str, ServiceTime]
    agents: tuple[EmulatedAgent, ...]


def load(path: Path) -> EmulatorSpec:
    """Read and validate an emulator file (or a simulator scenario)."""
    return parse(read_yaml(path, ""), path.parent)


def parse(document: Any, base_dir: Path = Path()) -> EmulatorSpec:
    """Validate a document as YAML loads it; a ``cluster`` file path resolves from ``base_dir``."""
    top = Node(document, "")
    top.only("seed", "models", "cluster", *_SIMULATOR_KEYS)
    service = service_times(top.child("models", required=True))
    agents: list[EmulatedAgent] = []
    seen: set[str] = set()
    for entry in cluster_entries(top.child("cluster", required=True), base_dir):
        sims = cluster_entry(entry, service, seen, _AGENT_KEYS)
        agents.extend(_emulated(entry, sims))
    if len(agents) > MAX_AGENTS:
        raise ScenarioError("cluster", f"{len(agents)} agents; at most {MAX_AGENTS} are supported")
    ports = [a.port for a in agents if a.port]
    if len(ports) != len(set(ports)):
        raise ScenarioError("cluster", "two agents are given the same port")
    return EmulatorSpec(top.integer("seed", 1, low=0), service, tuple(agents))


def parse_fault(document: Any, path: str = "") -> Fault:
    """A fault as the admin endpoint takes it: ``{"fault": KIND, "factor": N}``."""
    node = Node(document, path)
    node.only("fault", "factor")
    return _fault(node, "fault", "factor")


def _emulated(entry: Node, sims: list[SimAgent]) -> list[EmulatedAgent]:
    text = entry.string("engine", "ollama")
    engine = ENGINES.get(text)
    if engine is None:
        raise ScenarioError(
            f"{entry.path}.engine", f"must be one of {', '.join(ENGINES)}, got {text!r}"
        )
    fault = _fault(entry, "fault", "slow_factor")
    base_port = entry.integer("port", 0, low=1, high=65535) if entry.has("port") else 0
    if base_port and base_port + len(sims) - 1 > 65535:
        raise ScenarioError(f"{entry.path}.port", "the entry's ports run past 65535")
    max_queue = entry.integer("max_queue", 512, low=1)
    return [
        EmulatedAgent(sim, engine, base_port + n if base_port else 0, fault, max_queue)
        for n, sim in enumerate(sims)
    ]


def _fault(node: Node, kind_key: str, factor_key: str) -> Fault:
    kind = node.string(kind_key, "ok")
    if kind not in FAULTS:
        raise ScenarioError(
            f"{node.path}.{kind_key}" if node.path else kind_key,
            f"must be one of {', '.join(FAULTS)}, got {kind!r}",
        )
    return Fault(kind, node.number(factor_key, 10.0, low=0, low_open=True))

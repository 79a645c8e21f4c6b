"""The ``models`` and ``cluster`` sections: service times, and agents decoded from entries.

``service_times`` reads each model's service-time distribution; ``cluster_entry`` turns
one ``cluster`` entry into its agents (``count`` of them), with the hardware, speed and
slots the simulation runs on. The emulator reads its agent files through the same two
functions (``lb_service/emulate/spec.py``), so an agent is decoded one way whichever
command reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from lb_service.agent_fields import agent_from_fields
from lb_service.errors import InvalidArgument
from lb_service.model import Hardware
from lb_service.simulate.document import Node, ScenarioError, names, read_yaml
from lb_service.simulate.scenario.types import ServiceTime, SimAgent

#: Most agents a scenario may define (after ``count`` expansion); keeps a run bounded.
MAX_AGENTS = 2000


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


#: The keys of a ``cluster`` entry that describe the agent to the balancer (the
#: ``agent_fields`` reader's; ``host`` defaults to ``<id>.sim``, ``port`` to 11434).
_AGENT_KEYS = ("host", "port", "models", "hardware", "max_connections", "parallel_slots")

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
    "load_ms",
    "max_loaded_models",
)


def _reason(message: str, field: str) -> str:
    """``message`` without the path it starts with (ScenarioError adds the field's own)."""
    prefix = f"{field}: "
    return message[len(prefix) :] if field and message.startswith(prefix) else message


def cluster_entries(node: Node, base_dir: Path) -> list[Node]:
    """The entries of ``cluster``: its list, or the list in the file it names."""
    if isinstance(node.value, str):
        path = base_dir / node.value
        node = Node(read_yaml(path, node.path), f"{node.path}({node.value})")
    entries = node.items()
    if not entries:
        raise ScenarioError(node.path, "must list at least one agent")
    return entries


def read_cluster(
    node: Node, service: Mapping[str, ServiceTime], base_dir: Path
) -> tuple[SimAgent, ...]:
    """The ``cluster`` section: every agent, ``count`` entries expanded, ids unique."""
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
    # The agent as the balancer is told about it, read as every file's agents are;
    # `speed` and `slots` are what the simulated agent does.
    given = {key: entry.value[key] for key in _AGENT_KEYS if key in entry.value}
    try:
        template = agent_from_fields(
            {"host": f"{base_id}.sim", "port": 11434, **given, "id": base_id},
            entry.path,
            fields=("id", *_AGENT_KEYS),
        )
    except InvalidArgument as error:
        raise ScenarioError(error.field, _reason(str(error), error.field)) from None
    hardware = template.hardware
    speed = entry.number("speed", default_speed(hardware), low=0, low_open=True)
    # Ollama runs 4 requests at once by default when memory allows, 1 otherwise;
    # a CPU-only host gains nothing from parallel slots.
    slots = entry.integer("slots", 4 if hardware.has_gpu else 1, low=1)
    load_ms = entry.number("load_ms", 0.0, low=0)
    max_loaded = entry.integer("max_loaded_models", 3, low=1)
    for n in range(count):
        agent_id = base_id if count == 1 else f"{base_id}-{n + 1}"
        if agent_id in seen:
            raise ScenarioError(f"{entry.path}.id", f"agent id {agent_id!r} is used twice")
        seen.add(agent_id)
        host = template.host if "host" in given else f"{agent_id}.sim"
        agent = replace(template, id=agent_id, host=host)
        agents.append(SimAgent(agent, speed, slots, load_ms, max_loaded))
    return agents

"""An agent as named fields: the one reader of agents from files, and its writer.

The config file's ``agents:`` entries, the state file's ``agents`` and a simulated
cluster's entries spell an agent alike::

    id, host, port, models, hardware: {gpu, vram_gb, cpu_cores, ram_gb}, metadata,
    max_connections, parallel_slots, engine, heartbeat_ttl_ms, probe_path

``agent_from_fields`` reads one: every field typed, then every rule ``RegisterAgent``
applies (``validation.check_agent``). A bad field is an ``InvalidArgument`` whose message
starts with where it sits (``agents[2].hardware.vram_gb: must be a number``); each
reader turns it into its own error (ConfigError, SnapshotError, ScenarioError).
``agent_to_fields`` writes what it reads. Agents from the wire are the client's wire
module's, and the Redis store's own encoding is never read from outside.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from lb_service.errors import InvalidArgument
from lb_service.model import Agent, Engine, Hardware
from lb_service.validation import check_agent

__all__ = ["AGENT_FIELDS", "agent_from_fields", "agent_to_fields"]

#: Every field an agent has, as files spell them.
AGENT_FIELDS = (
    "id",
    "host",
    "port",
    "models",
    "hardware",
    "metadata",
    "max_connections",
    "parallel_slots",
    "engine",
    "heartbeat_ttl_ms",
    "probe_path",
)
_HARDWARE_FIELDS = ("gpu", "vram_gb", "cpu_cores", "ram_gb")
_ENGINES = ", ".join(engine.value for engine in Engine if engine.value)


def agent_to_fields(agent: Agent) -> dict[str, object]:
    """The agent as ``agent_from_fields`` reads it back (plain JSON and YAML values)."""
    hardware = agent.hardware
    return {
        "id": agent.id,
        "host": agent.host,
        "port": agent.port,
        "models": list(agent.models),
        "hardware": {
            "gpu": hardware.gpu,
            "vram_gb": hardware.vram_gb,
            "cpu_cores": hardware.cpu_cores,
            "ram_gb": hardware.ram_gb,
        },
        "metadata": dict(agent.metadata),
        "max_connections": agent.max_connections,
        "parallel_slots": agent.parallel_slots,
        "engine": agent.engine.value,
        "heartbeat_ttl_ms": agent.heartbeat_ttl_ms,
        "probe_path": agent.probe_path,
    }


def agent_from_fields(
    raw: object, where: str, *, address: bool = True, fields: Collection[str] = AGENT_FIELDS
) -> Agent:
    """The agent ``raw`` (a mapping) describes, checked; else ``InvalidArgument``.

    ``fields`` are the ones this kind of file may hold (any other is an error naming
    them); absent ones take the ``Agent`` defaults. Texts may be written as numbers
    (``id: 7`` in YAML is the id "7"); counts must be whole numbers from 0; amounts
    may be numeric text. ``address=False`` accepts an agent without host and port, as
    a state file of an older release holds them (``validation.check_agent``).
    """
    entry = _Entry(raw, where)
    entry.only(fields)
    hardware = _Entry(entry.value.get("hardware", {}), f"{where}.hardware")
    hardware.only(_HARDWARE_FIELDS)
    agent = Agent(
        id=entry.text("id"),
        host=entry.text("host"),
        port=entry.count("port"),
        models=tuple(entry.texts("models")),
        hardware=Hardware(
            gpu=hardware.text("gpu"),
            vram_gb=hardware.amount("vram_gb"),
            cpu_cores=hardware.count("cpu_cores"),
            ram_gb=hardware.amount("ram_gb"),
        ),
        metadata=entry.labels("metadata"),
        max_connections=entry.count("max_connections"),
        # Files written before a field existed read it as its default: slots guessed,
        # not probed, no heartbeats.
        parallel_slots=entry.count("parallel_slots"),
        engine=entry.engine("engine"),
        heartbeat_ttl_ms=entry.count("heartbeat_ttl_ms"),
        probe_path=entry.text("probe_path"),
    )
    return check_agent(agent, where, address=address)


class _Entry:
    """Typed reads of one mapping's fields, each error naming the field."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, Mapping):
            raise InvalidArgument(f"{where}: must be a mapping of an agent's fields", where)
        self.value: Mapping[str, Any] = value
        self.where = where

    def only(self, known: Collection[str]) -> None:
        unknown = sorted(str(key) for key in self.value if key not in known)
        if unknown:
            raise InvalidArgument(
                f"{self.where}: unknown field(s) {unknown}; known: {sorted(known)}", self.where
            )

    def _fail(self, key: str, what: str) -> InvalidArgument:
        path = f"{self.where}.{key}"
        return InvalidArgument(f"{path}: {what}, got {self.value.get(key)!r}", path)

    def text(self, key: str) -> str:
        value = self.value.get(key, "")
        if not _scalar(value):
            raise self._fail(key, "must be a text")
        return str(value)

    def texts(self, key: str) -> list[str]:
        values = self.value.get(key) or []
        if not isinstance(values, list) or not all(_scalar(v) for v in values):
            raise self._fail(key, "must be a list of texts")
        return [str(value) for value in values]

    def labels(self, key: str) -> dict[str, str]:
        labels = self.value.get(key) or {}
        if not isinstance(labels, Mapping) or not all(
            _scalar(k) and _scalar(v) for k, v in labels.items()
        ):
            raise self._fail(key, "must map texts to texts")
        return {str(k): str(v) for k, v in labels.items()}

    def count(self, key: str) -> int:
        value = self.value.get(key, 0)
        # bool is an int in Python, never a count here.
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._fail(key, "must be a whole number >= 0")
        return value

    def amount(self, key: str) -> float:
        value = self.value.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self._fail(key, "must be a number")
        try:
            number = float(value)
        except ValueError:
            raise self._fail(key, "must be a number") from None
        if not math.isfinite(number):
            raise self._fail(key, "must be finite")
        return number

    def engine(self, key: str) -> Engine:
        value = self.value.get(key) or ""
        try:
            return Engine(value)
        except ValueError:
            path = f"{self.where}.{key}"
            raise InvalidArgument(
                f"{path}: must be one of {_ENGINES}; got {value!r}", path
            ) from None


def _scalar(value: object) -> bool:
    """A value a text may be written as: text or a number (not a boolean, list or mapping)."""
    return isinstance(value, str | int | float) and not isinstance(value, bool)

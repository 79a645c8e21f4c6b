"""State that survives a restart: registry, weights, strategy, sessions and drains in one JSON file.

A save writes a temporary file in the same directory, fsyncs it, renames it over the
state file and fsyncs the directory, so a crash at any moment leaves either the old
snapshot or the new one, never half of one. A restore that finds a file it cannot read
(corrupt, truncated, another format version) sets it aside as ``<name>.corrupt`` and
reports why; the caller logs that and starts empty rather than failing to start.

Loads, leases and counters are not saved: after a restart every active count is 0,
leases issued before it are unknown, and latency averages start again. Of agent health
only drains are saved (an operator's word must outlive a restart); probe verdicts and
heartbeats start again, as the prober and the agents renew them within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lb_service.agent_fields import agent_from_fields, agent_to_fields
from lb_service.errors import InvalidArgument
from lb_service.model import Agent, StrategyName
from lb_service.store.base import Binding
from lb_service.validation import check_weights, require_id

#: Written into every file and checked on restore; bump it when the layout changes.
FORMAT_VERSION = 1
#: Names the kind of file, so a state file is never confused with another JSON file.
FORMAT_NAME = "lb-service-state"


@dataclass(frozen=True, slots=True)
class StoreState:
    """What a snapshot holds: the registry, weight overrides, strategy and session bindings."""

    strategy: StrategyName
    agents: tuple[Agent, ...]
    weights: Mapping[str, float]
    bindings: Mapping[str, Binding]
    #: Agents drained by an admin (DrainAgent) and not undrained.
    drained: tuple[str, ...] = ()


class SnapshotError(ValueError):
    """A state file that cannot be restored; the message says where it went wrong."""


class Snapshotable(Protocol):
    """A store whose state can be copied out and put back (MemoryStore)."""

    def export_state(self) -> StoreState:
        """Copy the state to save."""
        ...

    def import_state(self, state: StoreState) -> None:
        """Replace the state with a restored one."""
        ...

    def version(self) -> int:
        """A number that changes whenever the state may have changed."""
        ...


def encode(state: StoreState, saved_at_ms: int) -> bytes:
    """Serialize a state as the versioned JSON document a state file holds."""
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "saved_at_ms": saved_at_ms,
        "strategy": state.strategy.value,
        "agents": [agent_to_fields(agent) for agent in state.agents],
        "weights": dict(state.weights),
        "sessions": {
            session_id: {"agent_id": b.agent_id, "last_used_ms": b.last_used_ms}
            for session_id, b in state.bindings.items()
        },
        # A file saved before drains were kept has no such key: none drained.
        "drained": list(state.drained),
    }
    # allow_nan=False: a NaN would make a file that strict JSON readers reject.
    return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def decode(data: bytes) -> StoreState:
    """Parse and validate a state file's bytes; raise SnapshotError naming what is wrong."""
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise SnapshotError(f"not valid JSON ({error})") from None
    root = _Fields(document, "the file")
    if root.get("format", str) != FORMAT_NAME:
        raise SnapshotError(f"format: expected {FORMAT_NAME!r}")
    version = root.get("version", int)
    if version != FORMAT_VERSION:
        raise SnapshotError(f"format version {version} is not supported (this is {FORMAT_VERSION})")
    try:
        strategy = StrategyName(root.get("strategy", str))
    except ValueError:
        raise SnapshotError(f"strategy: unknown {document['strategy']!r}") from None
    agents = tuple(
        _agent_from_json(raw, f"agents[{i}]") for i, raw in enumerate(root.get("agents", list))
    )
    ids = [agent.id for agent in agents]
    if len(set(ids)) != len(ids):
        raise SnapshotError("agents: an id appears more than once")
    weights = {
        key: _Fields.number(value, f"weights.{key}") for key, value in root.mapping("weights")
    }
    try:
        check_weights(weights)
    except InvalidArgument as error:
        raise SnapshotError(f"weights: {error}") from None
    if set(weights) - set(ids):
        raise SnapshotError("weights: name agents that are not in agents")
    bindings = {}
    for session_id, raw in root.mapping("sessions"):
        fields = _Fields(raw, f"sessions.{session_id}")
        bindings[session_id] = Binding(
            _valid_id(fields.get("agent_id", str), f"sessions.{session_id}.agent_id"),
            fields.get("last_used_ms", int),
        )
        _valid_id(session_id, "sessions: a session id")
    drained = tuple(root.optional("drained", list, []))
    if not all(isinstance(i, str) for i in drained) or set(drained) - set(ids):
        raise SnapshotError("drained: must list ids of agents in agents")
    return StoreState(strategy, agents, weights, bindings, drained)


def read(path: Path) -> StoreState | None:
    """Read a state file; None when there is none. Raises SnapshotError or OSError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode(data)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new, whole."""
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # The rename is durable only once the directory entry is on disk too.
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@dataclass(frozen=True, slots=True)
class Restored:
    """What restoring found: the state put back, or the problem and where the file went."""

    state: StoreState | None = None
    problem: str = ""
    set_aside: Path | None = None


class StateFile:
    """Keeps one store's state in one file: restore at start, save at intervals and at stop."""

    def __init__(self, path: Path, store: Snapshotable) -> None:
        """Keep ``store``'s state in ``path``; nothing is read or written yet."""
        self.path = path
        self._store = store
        self._saved_version: int | None = None
        self._writing: asyncio.Future[None] | None = None

    @property
    def corrupt_path(self) -> Path:
        """Where a file that cannot be restored is moved to."""
        return self.path.with_name(self.path.name + ".corrupt")

    def restore(self) -> Restored:
        """Put the file's state into the store; set a bad file aside instead of failing."""
        self._remove_leftovers()
        try:
            state = read(self.path)
        except (SnapshotError, OSError) as error:
            problem = (
                f"cannot read it: {error.strerror or error}"
                if isinstance(error, OSError)
                else str(error)
            )
            try:
                os.replace(self.path, self.corrupt_path)
            except OSError as moving:
                # Left in place, a later save overwrites it; say so rather than hide it.
                return Restored(problem=f"{problem}; could not set it aside: {moving.strerror}")
            return Restored(problem=problem, set_aside=self.corrupt_path)
        if state is None:
            return Restored()
        self._store.import_state(state)
        self._saved_version = self._store.version()
        return Restored(state)

    async def save(self) -> bool:
        """Write the state if it changed since the last save; return whether it wrote.

        The state is copied on the event loop (so it is consistent) and encoded and
        written in a thread (so a large registry never stalls RPCs). Raises OSError
        when the file cannot be written; the next save tries again.
        """
        if self._writing is not None:
            # A write whose caller was cancelled still runs in its thread: let it land
            # first, so an older snapshot never replaces a newer one.
            await asyncio.wait([self._writing])
        version = self._store.version()
        if version == self._saved_version:
            return False
        state = self._store.export_state()
        saved_at_ms = time.time_ns() // 1_000_000
        self._writing = asyncio.get_running_loop().run_in_executor(
            None, lambda: write_atomically(self.path, encode(state, saved_at_ms))
        )
        try:
            await asyncio.shield(self._writing)
        except OSError:
            self._saved_version = None
            raise
        self._saved_version = version
        return True

    def _remove_leftovers(self) -> None:
        # Temporary files of a save interrupted by a crash: never the state itself.
        for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()


class _Fields:
    """Typed access to one JSON object, with errors that name the field."""

    def __init__(self, value: object, where: str) -> None:
        if not isinstance(value, dict):
            raise SnapshotError(f"{where}: must be an object")
        self._value: dict[str, Any] = value
        self._where = where

    def get(self, key: str, kind: type[Any]) -> Any:
        value = self._value.get(key)
        # bool is an int in Python, never a valid count or text here.
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SnapshotError(f"{self._name(key)}: must be a {kind.__name__}")
        return value

    def optional(self, key: str, kind: type[Any], default: Any) -> Any:
        return self.get(key, kind) if key in self._value else default

    def mapping(self, key: str) -> list[tuple[str, Any]]:
        return list(self.get(key, dict).items())

    @staticmethod
    def number(value: object, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SnapshotError(f"{where}: must be a number")
        if not math.isfinite(value):
            raise SnapshotError(f"{where}: must be finite")
        return float(value)

    def _name(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where != "the file" else key


def _valid_id(value: str, where: str) -> str:
    try:
        return require_id(value, where)
    except InvalidArgument as error:
        raise SnapshotError(str(error)) from None


def _agent_from_json(raw: object, where: str) -> Agent:
    try:
        # An older release accepted agents without an address: restore them as they were.
        return agent_from_fields(raw, where, address=False)
    except InvalidArgument as error:
        raise SnapshotError(str(error)) from None

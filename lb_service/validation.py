"""Input checks done once at the core's edge, so strategies and the store can trust their input."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from lb_service.errors import InvalidArgument
from lb_service.model import Agent, Task

MAX_PORT = 65535
#: Longest agent or session id. Ids are kept as keys for as long as the agent or the
#: session lives, so their length bounds memory as much as the counts do.
MAX_ID_LENGTH = 1024
#: Most text one agent may carry in host, gpu, models and metadata together, so the
#: registry's size is bounded by max_agents times this (not by the message size).
MAX_AGENT_TEXT = 64 * 1024
#: Most parallel slots an agent may declare. Serving engines batch at most about this
#: many (vLLM's max_num_seqs defaults to 256, or 1024 on the largest GPUs; Ollama's
#: OLLAMA_NUM_PARALLEL to 1 or 4), so a larger figure is a typo. The slot count scales
#: the agent's capacity guess and divides the busy time one request counts for, so a
#: typo such as 40000 for 4 would make the agent look thousands of times faster and
#: draw nearly every request.
MAX_PARALLEL_SLOTS = 1024
#: Longest model name a request start may name. Its lease keeps the name until it ends,
#: and the agent's model-cost figures keep up to ``model_cost.MAX_MODELS`` of them.
MAX_MODEL_LENGTH = 1024
#: Longest heartbeat TTL an agent may declare (one day): a longer one is a typo of units.
MAX_HEARTBEAT_TTL_MS = 86_400_000
#: Longest probe path an agent may declare.
MAX_PROBE_PATH = 1024


def require_id(value: str, what: str = "agent_id", field: str | None = None) -> str:
    """Return ``value`` if it is a usable id, else raise InvalidArgument.

    ``field`` is the request field's path, when ``what`` is not that path itself.
    """
    path = what if field is None else field
    if not value:
        raise InvalidArgument(f"{what} must not be empty", path)
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(
            f"{what} must be at most {MAX_ID_LENGTH} characters, got {len(value)}", path
        )
    return value


def check_model(value: str, field: str = "model") -> str:
    """Return ``value`` (empty means not told) if it is not longer than a model name may be."""
    if len(value) > MAX_MODEL_LENGTH:
        raise InvalidArgument(
            f"{field} must be at most {MAX_MODEL_LENGTH} characters, got {len(value)}", field
        )
    return value


def check_session_id(value: str) -> str:
    """Return ``value`` (empty means no session) if it is not longer than an id may be."""
    return require_id(value, "session_id") if value else value


def require_amount(value: float, what: str, field: str | None = None) -> float:
    """Return ``value`` if it is finite and not negative, else raise InvalidArgument.

    ``field`` is the request field's path, when ``what`` is not that path itself.
    """
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise InvalidArgument(
            f"{what} must be a finite number >= 0, got {value!r}",
            what if field is None else field,
        )
    return value


def check_agent(agent: Agent, where: str = "agent", *, address: bool = True) -> Agent:
    """Return ``agent`` if every field is well formed, else raise InvalidArgument.

    ``where`` is where the agent sits in the request (``agent``, ``candidates[2]``):
    messages and field paths start with it. Every path an agent enters by
    (RegisterAgent, candidates, the config file) calls this, so they share one rule set.
    ``address=False`` skips only the address rule: a state file restores what an older
    release accepted, and must not lose a fleet.
    """
    require_id(agent.id, f"{where}.id")
    if address:
        check_address(agent, where)
    elif agent.port > MAX_PORT:
        raise InvalidArgument(
            f"{where}.port: must be at most {MAX_PORT}, got {agent.port}", f"{where}.port"
        )
    if not 0 <= agent.parallel_slots <= MAX_PARALLEL_SLOTS:
        # Checked wherever the agent comes from (a state file too): the slot count is
        # no address rule, and the capacity model trusts it.
        raise InvalidArgument(
            f"{where}.parallel_slots: must be from 0 (guess from the hardware) to "
            f"{MAX_PARALLEL_SLOTS}, got {agent.parallel_slots} (agent {agent.id!r})",
            f"{where}.parallel_slots",
        )
    check_health_fields(agent, where)
    for name, amount in (("vram_gb", agent.hardware.vram_gb), ("ram_gb", agent.hardware.ram_gb)):
        require_amount(amount, f"{where} {agent.id!r}: hardware.{name}", f"{where}.hardware.{name}")
    empty = next((n for n, model in enumerate(agent.models) if not model), None)
    if empty is not None:
        raise InvalidArgument(
            f"{where} {agent.id!r}: model names must not be empty", f"{where}.models[{empty}]"
        )
    text = _text_size(agent)
    if text > MAX_AGENT_TEXT:
        raise InvalidArgument(
            f"{where} {agent.id!r}: host, gpu, models and metadata must hold at most "
            f"{MAX_AGENT_TEXT} characters together, got {text}",
            where,
        )
    return agent


def check_health_fields(agent: Agent, where: str = "agent") -> None:
    """Raise InvalidArgument unless the heartbeat TTL and probe path are usable."""
    if not 0 <= agent.heartbeat_ttl_ms <= MAX_HEARTBEAT_TTL_MS:
        raise InvalidArgument(
            f"{where}.heartbeat_ttl_ms: must be from 0 (no heartbeats) to "
            f"{MAX_HEARTBEAT_TTL_MS} (one day), got {agent.heartbeat_ttl_ms} (agent {agent.id!r})",
            f"{where}.heartbeat_ttl_ms",
        )
    path = agent.probe_path
    if path and (not path.startswith("/") or len(path) > MAX_PROBE_PATH or not path.isprintable()):
        raise InvalidArgument(
            f'{where}.probe_path: must be empty ("/") or a printable path starting with '
            f'"/" of at most {MAX_PROBE_PATH} characters, got {path[:64]!r} (agent {agent.id!r})',
            f"{where}.probe_path",
        )


def check_address(agent: Agent, where: str = "agent") -> None:
    """Raise InvalidArgument unless the agent has a host and a port from 1 to MAX_PORT.

    A pick is only useful if the dispatcher can connect to it: an agent without an
    address would be handed out and every request sent to it would fail.
    """
    if not agent.host.strip():
        raise InvalidArgument(
            f"{where}.host: required: the host name or address dispatchers connect to "
            f"(agent {agent.id!r})",
            f"{where}.host",
        )
    if not 1 <= agent.port <= MAX_PORT:
        raise InvalidArgument(
            f"{where}.port: must be from 1 to {MAX_PORT}, got {agent.port} (agent {agent.id!r})",
            f"{where}.port",
        )


def _text_size(agent: Agent) -> int:
    return (
        len(agent.host)
        + len(agent.hardware.gpu)
        + sum(map(len, agent.models))
        + sum(len(key) + len(value) for key, value in agent.metadata.items())
    )


def check_candidates(candidates: Iterable[Agent], limit: int) -> tuple[Agent, ...]:
    """Return the candidates if there are at most ``limit``, each well formed, ids unique.

    ``candidates`` may be lazy: checking stops at the first bad one, so an oversized
    request is refused before the rest of it is even converted.
    """
    seen: set[str] = set()
    checked: list[Agent] = []
    for agent in candidates:
        path = f"candidates[{len(checked)}]"
        if len(checked) == limit:
            raise InvalidArgument(
                f"at most {limit} candidates may be passed per request (max_candidates), "
                "got more; register the agents with RegisterAgent instead",
                "candidates",
            )
        check_agent(agent, path)
        if agent.id in seen:
            raise InvalidArgument(f"candidate id {agent.id!r} appears more than once", f"{path}.id")
        seen.add(agent.id)
        checked.append(agent)
    return tuple(checked)


def check_task(task: Task) -> Task:
    """Return ``task`` if its requirements are well formed."""
    require_amount(task.min_vram_gb, "task.min_vram_gb")
    return task


def check_ids(agent_ids: Iterable[str]) -> tuple[str, ...]:
    """Return the ids if none is empty or repeated."""
    ids = tuple(agent_ids)
    for n, agent_id in enumerate(ids):
        require_id(agent_id, field=f"agent_ids[{n}]")
    if len(set(ids)) != len(ids):
        raise InvalidArgument("agent_ids must not repeat an id", "agent_ids")
    return ids


def check_weights(weights: Mapping[str, float]) -> Mapping[str, float]:
    """Return the weights if every id is set and every weight is finite and >= 0."""
    for agent_id, weight in weights.items():
        require_id(agent_id, "weights key", "weights")
        require_amount(weight, f"weight of {agent_id!r}", f"weights[{agent_id}]")
    return weights

"""The state file: export/import, the versioned JSON format, atomic saves, bad files set aside."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from lb_service.health import state
from lb_service.health.state import HEALTHY_RECORD
from lb_service.model import Agent, AgentHealth, Engine, Hardware, StrategyName
from lb_service.store.base import Binding, Pick
from lb_service.store.memory import MemoryStore
from lb_service.store.snapshot import (
    FORMAT_VERSION,
    SnapshotError,
    StateFile,
    StoreState,
    decode,
    encode,
    read,
    write_atomically,
)
from tests.factories import START_MS, agent

GPU = Agent(
    id="gpu-1",
    host="10.0.0.21",
    port=11434,
    models=("llama3:8b", "llama3:70b"),
    hardware=Hardware(gpu="RTX 4090", vram_gb=24.0, cpu_cores=16, ram_gb=64.0),
    metadata={"zone": "eu-1"},
    max_connections=4,
    parallel_slots=2,
)


async def _populated() -> MemoryStore:
    store = MemoryStore(epoch="old")
    await store.put_agent(agent("cpu-1"), START_MS)
    await store.put_agent(GPU, START_MS)
    await store.set_weights({"cpu-1": 3.5})
    await store.set_strategy(StrategyName.WEIGHTED)
    await store.commit_pick(Pick("gpu-1", START_MS, session_id="chat-1", bind=True))
    await store.open_lease("gpu-1", START_MS)
    return store


async def test_export_import_round_trips_registry_weights_strategy_sessions() -> None:
    """A store imported from another's export has the same agents, weights, strategy, sessions."""
    source = await _populated()
    target = MemoryStore()
    target.import_state(decode(encode(source.export_state(), START_MS)))
    assert await target.agents() == await source.agents()
    assert list(await target.agents()) == ["cpu-1", "gpu-1"]
    assert dict(await target.weights()) == {"cpu-1": 3.5}
    assert await target.strategy() is StrategyName.WEIGHTED
    assert (await target.pick_state("chat-1")).binding == Binding("gpu-1", START_MS)


async def test_import_brings_back_no_load_or_lease() -> None:
    """Loads and leases are not in a snapshot: after import every agent is idle."""
    target = MemoryStore()
    target.import_state((await _populated()).export_state())
    assert await target.leases() == {}
    assert {s.active for s in (await target.stats()).values()} == {0}


def test_encode_writes_a_versioned_document() -> None:
    """The file names its format and version, so a later release can tell what it reads."""
    state = StoreState(StrategyName.ROUND_ROBIN, (GPU,), {}, {})
    document = json.loads(encode(state, START_MS))
    assert (document["format"], document["version"]) == ("lb-service-state", FORMAT_VERSION)
    assert document["saved_at_ms"] == START_MS
    assert document["agents"][0]["hardware"]["vram_gb"] == 24.0
    assert document["agents"][0]["parallel_slots"] == 2


def _valid() -> dict[str, object]:
    state = StoreState(StrategyName.ROUND_ROBIN, (GPU,), {"gpu-1": 2.0}, {"s": Binding("x", 1)})
    document: dict[str, object] = json.loads(encode(state, START_MS))
    return document


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "something-else"}, "format: expected 'lb-service-state'"),
        ({"version": 99}, "format version 99 is not supported"),
        ({"version": "1"}, "version: must be a int"),
        ({"strategy": "fastest"}, "strategy: unknown 'fastest'"),
        ({"agents": {}}, "agents: must be a list"),
        ({"agents": [{"id": ""}]}, "agents[0].id must not be empty"),
        (
            {"agents": [{"id": "a", "port": 70000}]},
            "agents[0].port: must be at most 65535, got 70000",
        ),
        ({"agents": [{"id": "a", "port": -1}]}, "agents[0].port: must be a whole number >= 0"),
        ({"agents": [{"id": "a", "port": True}]}, "agents[0].port: must be a whole number"),
        (
            {"agents": [{"id": "a", "parallel_slots": -2}]},
            "agents[0].parallel_slots: must be a whole",
        ),
        (
            {"agents": [{"id": "a", "parallel_slots": 5000}]},
            "agents[0].parallel_slots: must be from 0 (guess from the hardware) to 1024, got 5000",
        ),
        ({"agents": [{"id": "a", "models": [[1]]}]}, "models: must be a list of texts"),
        ({"agents": [{"id": "a", "metadata": {"k": [1]}}]}, "metadata: must map texts to texts"),
        ({"agents": [{"id": "a", "hardware": {"vram_gb": "x"}}]}, "vram_gb: must be a number"),
        ({"agents": [{"id": "a", "hardware": {"ram_gb": math.nan}}]}, "ram_gb: must be finite"),
        ({"agents": [{"id": "a"}, {"id": "a"}]}, "an id appears more than once"),
        ({"agents": ["a"]}, "agents[0]: must be a mapping of an agent's fields"),
        ({"weights": {"gpu-1": -1}}, "weights: weight of 'gpu-1' must be a finite number"),
        ({"weights": {"ghost": 1}}, "weights: name agents that are not in agents"),
        ({"sessions": {"s": {"agent_id": ""}}}, "sessions.s.agent_id must not be empty"),
        ({"sessions": {"s": {"agent_id": "a", "last_used_ms": 1.5}}}, "last_used_ms: must be"),
        ({"sessions": {"": {"agent_id": "a", "last_used_ms": 1}}}, "a session id must not be"),
        ({"drained": ["ghost"]}, "drained: must list ids of agents in agents"),
        ({"drained": [1]}, "drained: must list ids of agents in agents"),
        ({"agents": [{"id": "a", "engine": "tgi"}]}, "agents[0].engine: must be one of ollama"),
        (
            {"agents": [{"id": "a", "heartbeat_ttl_ms": 86_400_001}]},
            "agents[0].heartbeat_ttl_ms: must be from 0",
        ),
    ],
)
def test_decode_names_what_is_wrong(change: dict[str, object], message: str) -> None:
    """Every malformed part of a document is refused with a message naming it."""
    with pytest.raises(SnapshotError) as caught:
        decode(json.dumps({**_valid(), **change}).encode())
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"\xff\xfe", b"[]", b"[" * 100_000, b'{"format": "lb-service-state"}', b"NaN"],
    ids=["empty", "truncated", "not-utf8", "a-list", "deeply-nested", "no-version", "nan"],
)
def test_decode_refuses_garbage(data: bytes) -> None:
    """Bytes that are not a state document raise SnapshotError, never anything else."""
    with pytest.raises(SnapshotError):
        decode(data)


def test_read_of_a_missing_file_is_none(tmp_path: Path) -> None:
    """No file yet is a first start, not an error."""
    assert read(tmp_path / "absent.json") is None


def test_write_atomically_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A save replaces the file whole and leaves nothing else in the directory."""
    path = tmp_path / "state.json"
    write_atomically(path, b"first")
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_atomically_cleans_up_when_the_rename_fails(tmp_path: Path) -> None:
    """A save that cannot land (the target is a directory) removes its temporary file."""
    path = tmp_path / "state.json"
    path.mkdir()
    with pytest.raises(OSError, match="directory"):
        write_atomically(path, b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


async def test_state_file_saves_only_changes_and_restores(tmp_path: Path) -> None:
    """save() writes when the store changed since the last save; restore() brings it back."""
    store = await _populated()
    state_file = StateFile(tmp_path / "state.json", store)
    assert await state_file.save() is True
    assert await state_file.save() is False
    await store.delete_agent("cpu-1")
    assert await state_file.save() is True
    restored = MemoryStore()
    outcome = StateFile(tmp_path / "state.json", restored).restore()
    assert (outcome.problem, outcome.set_aside) == ("", None)
    assert list(await restored.agents()) == ["gpu-1"]


async def test_restore_without_a_file_starts_empty(tmp_path: Path) -> None:
    """A first start finds no file: nothing restored, nothing reported."""
    store = MemoryStore()
    outcome = StateFile(tmp_path / "state.json", store).restore()
    assert (outcome.state, outcome.problem, outcome.set_aside) == (None, "", None)
    assert await store.agents() == {}


@pytest.mark.parametrize("cut", [0.5, 0.9])
async def test_a_truncated_file_is_set_aside(tmp_path: Path, cut: float) -> None:
    """A file cut short is reported and renamed to .corrupt; the store stays empty."""
    path = tmp_path / "state.json"
    data = encode((await _populated()).export_state(), START_MS)
    path.write_bytes(data[: int(len(data) * cut)])
    store = MemoryStore()
    outcome = StateFile(path, store).restore()
    assert "not valid JSON" in outcome.problem
    assert outcome.set_aside == tmp_path / "state.json.corrupt"
    assert not path.exists()
    assert outcome.set_aside.read_bytes() == data[: int(len(data) * cut)]
    assert await store.agents() == {}


async def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    """A state path that cannot be read (here a directory) is reported and set aside."""
    path = tmp_path / "state.json"
    path.mkdir()
    outcome = StateFile(path, MemoryStore()).restore()
    assert outcome.problem.startswith("cannot read it:")
    assert outcome.set_aside == tmp_path / "state.json.corrupt"


async def test_a_file_that_cannot_be_set_aside_is_reported(tmp_path: Path) -> None:
    """When even the rename fails, the report says so rather than hiding it."""
    path = tmp_path / "state.json"
    path.write_bytes(b"garbage")
    (tmp_path / "state.json.corrupt").mkdir()
    (tmp_path / "state.json.corrupt" / "keep").write_text("x")
    outcome = StateFile(path, MemoryStore()).restore()
    assert "could not set it aside" in outcome.problem
    assert outcome.set_aside is None


def test_restore_removes_temporaries_of_an_interrupted_save(tmp_path: Path) -> None:
    """Temporary files left by a crash mid-save are removed at start; the state file is kept."""
    path = tmp_path / "state.json"
    write_atomically(path, encode(StoreState(StrategyName.WEIGHTED, (GPU,), {}, {}), START_MS))
    (tmp_path / ".state.json.abc123.tmp").write_bytes(b"half")
    StateFile(path, MemoryStore()).restore()
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


async def test_a_failed_save_is_retried(tmp_path: Path) -> None:
    """A save that fails raises OSError and the next save writes again."""
    store = await _populated()
    directory = tmp_path / "gone"
    directory.mkdir()
    state_file = StateFile(directory / "state.json", store)
    directory.rmdir()
    with pytest.raises(OSError, match="No such file"):
        await state_file.save()
    directory.mkdir()
    assert await state_file.save() is True


def test_decode_keeps_an_agent_an_older_release_accepted_without_an_address() -> None:
    """A state file whose agent has no host or port restores it: the fleet is not set aside."""
    document = {**_valid(), "agents": [{"id": "old", "port": 0}], "weights": {}, "sessions": {}}
    state = decode(json.dumps(document).encode())
    assert [(a.id, a.host, a.port) for a in state.agents] == [("old", "", 0)]


def test_decode_reads_an_agent_saved_before_parallel_slots_as_undeclared() -> None:
    """A state file without the parallel_slots key restores the agent with 0 (slots guessed)."""
    saved = {"id": "gpu-1", "host": "h", "port": 1, "max_connections": 4}
    document = {**_valid(), "agents": [saved], "weights": {}, "sessions": {}}
    [restored] = decode(json.dumps(document).encode()).agents
    assert (restored.max_connections, restored.parallel_slots) == (4, 0)


async def test_drains_and_health_fields_survive_a_restart() -> None:
    """A drained agent is still draining after export and import; engine and TTL come back."""
    source = MemoryStore()
    watched = replace(GPU, engine=Engine.OLLAMA, heartbeat_ttl_ms=30_000, probe_path="/x")
    await source.put_agent(watched, START_MS)
    await source.put_agent(agent("cpu-1"), START_MS)
    await source.put_health("gpu-1", state.drained(HEALTHY_RECORD, True), None)
    target = MemoryStore()

    target.import_state(decode(encode(source.export_state(), START_MS)))

    assert (await target.agents())["gpu-1"] == watched
    assert dict((await target.pick_state("")).out) == {"gpu-1": AgentHealth.DRAINING}


def test_decode_reads_a_file_saved_before_health_as_nothing_drained() -> None:
    """A state file without drains or health fields restores agents unprobed and undrained."""
    document = {**_valid()}
    del document["drained"]
    agents = document["agents"]
    assert isinstance(agents, list)
    for saved in agents:
        for key in ("engine", "heartbeat_ttl_ms", "probe_path"):
            del saved[key]
    restored = decode(json.dumps(document).encode())
    assert restored.drained == ()
    assert (restored.agents[0].engine, restored.agents[0].heartbeat_ttl_ms) == (
        Engine.UNSPECIFIED,
        0,
    )

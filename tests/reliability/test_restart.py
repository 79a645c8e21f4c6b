"""Restart: the state file brings back agents, weights, strategy and sessions after a kill.

A corrupt or truncated file is reported, set aside as ``.corrupt`` and never stops the
server from starting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc
from structlog.testing import capture_logs

from lb_service.balancer import LoadBalancer
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store import snapshot
from lb_service.store.memory import MemoryStore
from lb_service.store.snapshot import StateFile, StoreState
from tests import factories
from tests.reliability.server_process import ServerProcess

HANG_GUARD_S = 20.0
AGENTS = [
    pb.Agent(
        id="gpu-1",
        host="10.0.0.21",
        port=11434,
        models=["llama3:8b", "llama3:70b"],
        hardware=pb.Hardware(gpu="RTX 4090", vram_gb=24, cpu_cores=16, ram_gb=64),
        metadata={"zone": "eu-1"},
        max_connections=4,
    ),
    pb.Agent(
        id="cpu-1", host="10.0.0.11", port=11434, models=["llama3:8b"], hardware=pb.Hardware()
    ),
    pb.Agent(
        id="cpu-2", host="10.0.0.12", port=11434, models=["llama3:8b"], hardware=pb.Hardware()
    ),
]


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Server processes started by a test; each is stopped (or killed) afterwards."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.close()


def _serve(servers: list[ServerProcess], *args: str) -> pb_grpc.LoadBalancerStub:
    server = ServerProcess(*args)
    servers.append(server)
    return pb_grpc.LoadBalancerStub(grpc.insecure_channel(server.address))


def _saved(path: Path, *, agents: int, sessions: int) -> StoreState:
    """The state file's contents once they hold this many agents and sessions (polled)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while True:
        state = snapshot.read(path)  # never half a file: a SnapshotError fails the test
        if state is not None and (len(state.agents), len(state.bindings)) == (agents, sessions):
            return state
        assert time.monotonic() < deadline, f"the state file never held {agents} agents"
        time.sleep(0.05)


def test_sigkill_then_restart_restores_the_last_snapshot(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """After SIGKILL the restarted server has the registry, weights, strategy and sessions saved."""
    path = tmp_path / "state.json"
    flags = ("--state-file", str(path), "--state-interval", "0.2")
    stub = _serve(servers, *flags)
    for agent in AGENTS:
        stub.RegisterAgent(pb.RegisterAgentRequest(agent=agent), timeout=HANG_GUARD_S)
    stub.UpdateWeights(pb.UpdateWeightsRequest(weights={"cpu-1": 3.0, "gpu-1": 0.5}))
    stub.SetStrategy(pb.SetStrategyRequest(strategy=pb.STRATEGY_ROUND_ROBIN))
    bound = {
        session: stub.SelectAgent(pb.SelectAgentRequest(session_id=session, acquire=True)).agent.id
        for session in ("chat-1", "chat-2", "chat-3")
    }
    saved = _saved(path, agents=3, sessions=3)
    servers[0].kill()

    stub = _serve(servers, *flags)
    restored = servers[1].wait_for("state_restored")
    assert (restored["agents"], restored["sessions"], restored["weights"]) == (3, 3, 2)
    assert list(stub.ListAgents(pb.ListAgentsRequest()).agents) == AGENTS
    assert [a.id for a in saved.agents] == [a.id for a in AGENTS]
    weights = stub.UpdateWeights(pb.UpdateWeightsRequest()).weights
    assert dict(weights) == {"gpu-1": 0.5, "cpu-1": 3.0, "cpu-2": 1.0}
    statistics = stub.GetStatistics(pb.GetStatisticsRequest())
    assert statistics.strategy == pb.STRATEGY_ROUND_ROBIN
    # Leases are not state that survives: every count starts again from zero.
    assert (statistics.active_connections, statistics.total_requests) == (0, 0)
    for session, agent_id in bound.items():
        again = stub.SelectAgent(pb.SelectAgentRequest(session_id=session))
        assert (again.agent.id, again.sticky) == (agent_id, True)


def test_sigterm_saves_the_state_on_the_way_out(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """A change made just before SIGTERM is in the file, though no interval save came."""
    path = tmp_path / "state.json"
    flags = ("--state-file", str(path), "--state-interval", "3600")
    stub = _serve(servers, *flags)
    stub.RegisterAgent(pb.RegisterAgentRequest(agent=AGENTS[1]), timeout=HANG_GUARD_S)
    assert not path.exists()
    assert servers[0].terminate() == 0
    assert [a.id for a in (snapshot.read(path) or pytest.fail("no state file")).agents] == ["cpu-1"]
    stub = _serve(servers, *flags)
    assert [a.id for a in stub.ListAgents(pb.ListAgentsRequest()).agents] == ["cpu-1"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: b"\x00" * 64,
    ],
    ids=["truncated", "garbage"],
)
def test_a_damaged_state_file_is_set_aside_and_the_server_starts_empty(
    tmp_path: Path, servers: list[ServerProcess], damage: Callable[[bytes], bytes]
) -> None:
    """A file that cannot be restored is logged, renamed .corrupt, and the server serves empty."""
    path = tmp_path / "state.json"
    flags = ("--state-file", str(path), "--state-interval", "3600")
    stub = _serve(servers, *flags)
    stub.RegisterAgent(pb.RegisterAgentRequest(agent=AGENTS[0]), timeout=HANG_GUARD_S)
    assert servers[0].terminate() == 0
    damaged = damage(path.read_bytes())
    path.write_bytes(damaged)

    stub = _serve(servers, *flags)
    report = servers[1].wait_for("state_file_unusable")
    assert report["set_aside"] == str(tmp_path / "state.json.corrupt")
    assert report["level"] == "error"
    assert (tmp_path / "state.json.corrupt").read_bytes() == damaged
    assert list(stub.ListAgents(pb.ListAgentsRequest(), timeout=HANG_GUARD_S).agents) == []
    stub.RegisterAgent(pb.RegisterAgentRequest(agent=AGENTS[1]))
    assert servers[1].terminate() == 0
    assert [a.id for a in (snapshot.read(path) or pytest.fail("no state file")).agents] == ["cpu-1"]


def test_an_explicit_strategy_flag_wins_over_the_remembered_one(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """--strategy given on the command line beats the strategy in the state file."""
    path = tmp_path / "state.json"
    stub = _serve(servers, "--state-file", str(path))
    stub.SetStrategy(pb.SetStrategyRequest(strategy=pb.STRATEGY_WEIGHTED), timeout=HANG_GUARD_S)
    assert servers[0].terminate() == 0
    stub = _serve(servers, "--state-file", str(path), "--strategy", "capability-match")
    strategy = stub.GetStatistics(pb.GetStatisticsRequest(), timeout=HANG_GUARD_S).strategy
    assert strategy == pb.STRATEGY_CAPABILITY_MATCH


async def _eventually(condition: Callable[[], bool]) -> None:
    """Wait, polling, until ``condition`` holds; fail at the hang guard."""
    for _ in range(int(HANG_GUARD_S / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail("the condition never held")


async def test_a_failing_save_is_logged_and_retried_while_serving(tmp_path: Path) -> None:
    """When the state file cannot be written the server logs it, keeps serving, and retries."""
    directory = tmp_path / "state"
    directory.mkdir()
    path = directory / "state.json"
    store = MemoryStore()
    balancer = LoadBalancer(store)
    server = LoadBalancerServer(
        balancer,
        ServerOptions(listen="127.0.0.1:0", state_interval_s=0.05),
        state=StateFile(path, store),
    )
    await server.start()
    try:
        with capture_logs() as logs:
            directory.rmdir()
            await balancer.register(factories.agent("a"))
            await _eventually(lambda: any(e["event"] == "state_save_failed" for e in logs))
        directory.mkdir()
        await _eventually(path.exists)
        saved = snapshot.read(path)
        assert saved is not None
        assert [a.id for a in saved.agents] == ["a"]
    finally:
        await server.stop(0)

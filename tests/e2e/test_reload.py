"""SIGHUP hot reload and config errors, on the real ``lb-service`` process."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from tests.e2e import processes

HANG_GUARD_S = 20

FIRST = """
strategy: least-connections
agents:
  - {id: keep, host: keep.local, port: 11434, models: [llama3:8b], hardware: {vram_gb: 24},
     parallel_slots: 8}
  - {id: drop, host: drop.local, port: 11434, models: [llama3:8b]}
weights: {keep: 5}
"""
SECOND = """
strategy: round-robin
agents:
  - {id: keep, host: moved.local, port: 11434, models: [llama3:8b], hardware: {vram_gb: 24},
     parallel_slots: 2}
  - {id: new, host: new.local, port: 11434, models: [llama3:8b]}
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config file declaring two agents, a weight and a strategy."""
    path = tmp_path / "lb.yaml"
    path.write_text(FIRST)
    return path


@pytest.fixture
def server(config_file: Path) -> Iterator[tuple[subprocess.Popen[str], pb_grpc.LoadBalancerStub]]:
    """The real server started on ``config_file``, and a stub connected to it."""
    process = processes.start("--config", str(config_file))
    try:
        port = processes.port(process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield process, pb_grpc.LoadBalancerStub(channel)
    finally:
        processes.stop(process)


def _ids(stub: pb_grpc.LoadBalancerStub) -> list[str]:
    return [a.id for a in stub.ListAgents(pb.ListAgentsRequest(), timeout=5).agents]


def test_file_agents_are_registered_at_start(
    server: tuple[subprocess.Popen[str], pb_grpc.LoadBalancerStub],
) -> None:
    """The declared agents, with their parallel slots, and weights are in place before a request."""
    _, stub = server
    assert _ids(stub) == ["keep", "drop"]
    agents = stub.ListAgents(pb.ListAgentsRequest(), timeout=5).agents
    assert [a.parallel_slots for a in agents] == [8, 0]
    weights = stub.UpdateWeights(pb.UpdateWeightsRequest(), timeout=5).weights
    assert dict(weights) == {"keep": 5.0, "drop": 1.0}


def test_sighup_reapplies_the_file_and_keeps_live_state(
    server: tuple[subprocess.Popen[str], pb_grpc.LoadBalancerStub], config_file: Path
) -> None:
    """After SIGHUP the new agents, weights and strategy apply; a kept agent keeps its load."""
    process, stub = server
    lease = stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="keep"), timeout=5)
    stub.RegisterAgent(
        pb.RegisterAgentRequest(agent=pb.Agent(id="api-added", host="10.0.0.1", port=11434)),
        timeout=5,
    )
    config_file.write_text(SECOND)
    process.send_signal(signal.SIGHUP)
    processes.wait_for(process, "reloaded")

    assert _ids(stub) == ["keep", "api-added", "new"]  # "drop" left the file; API agents stay
    [load] = stub.GetLoads(pb.GetLoadsRequest(agent_ids=["keep"]), timeout=5).loads
    assert (load.active_connections, load.weight) == (1, 24.0)  # weight back to default
    agents = {a.id: a for a in stub.ListAgents(pb.ListAgentsRequest(), timeout=5).agents}
    assert (agents["keep"].host, agents["keep"].parallel_slots) == ("moved.local", 2)
    stats = stub.GetStatistics(pb.GetStatisticsRequest(), timeout=5)
    assert stats.strategy == pb.STRATEGY_ROUND_ROBIN
    stub.RecordRequestEnd(pb.RecordRequestEndRequest(request_id=lease.request_id), timeout=5)


def test_invalid_file_on_sighup_changes_nothing(
    server: tuple[subprocess.Popen[str], pb_grpc.LoadBalancerStub], config_file: Path
) -> None:
    """A broken edit is rejected with a logged reason and the running config stays."""
    process, stub = server
    config_file.write_text("agents:\n  - {id: keep, host: keep.local, port: 99999}\n")
    process.send_signal(signal.SIGHUP)
    rejected = processes.wait_for(process, "reload_rejected")
    assert "port: must be from 1 to 65535" in rejected["error"]
    assert _ids(stub) == ["keep", "drop"]
    assert process.poll() is None


def test_invalid_config_exits_2_before_serving(tmp_path: Path) -> None:
    """A bad config file stops start-up with status 2 and one line naming field and value."""
    path = tmp_path / "lb.yaml"
    path.write_text("request_timeout_s: never\n")
    done = subprocess.run(
        [processes.LB_SERVICE, "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"lb-service: config error: {path}: request_timeout_s: must be a number, got 'never'"
    )


def test_environment_overrides_file(tmp_path: Path) -> None:
    """LB_STRATEGY beats the file's strategy, and a SIGHUP does not undo it."""
    path = tmp_path / "lb.yaml"
    path.write_text("strategy: weighted\nagents:\n  - {id: a, host: a.local, port: 11434}\n")
    process = processes.start("--config", str(path), env={"LB_STRATEGY": "capability-match"})
    try:
        port = processes.port(process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            assert stub.GetStatistics(pb.GetStatisticsRequest(), timeout=5).strategy == (
                pb.STRATEGY_CAPABILITY_MATCH
            )
            process.send_signal(signal.SIGHUP)
            processes.wait_for(process, "reloaded")
            assert stub.GetStatistics(pb.GetStatisticsRequest(), timeout=5).strategy == (
                pb.STRATEGY_CAPABILITY_MATCH
            )
    finally:
        processes.stop(process)


def test_a_reload_names_each_key_only_a_restart_applies(
    server: tuple[subprocess.Popen[str], pb_grpc.LoadBalancerStub], config_file: Path
) -> None:
    """A reload that changes a key it cannot apply while running warns, naming the key."""
    process, stub = server
    config_file.write_text(FIRST + "max_agents: 50\n")
    process.send_signal(signal.SIGHUP)
    warning = processes.wait_for(process, "reload_needs_restart")
    assert (warning["key"], warning["running"], warning["file"]) == ("max_agents", 10_000, 50)
    processes.wait_for(process, "reloaded")
    assert _ids(stub) == ["keep", "drop"]

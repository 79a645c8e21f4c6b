"""The real ``lb-service serve`` process: starts, serves, and exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from importlib import metadata

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from tests.e2e import processes

HANG_GUARD_S = 20


@pytest.fixture
def process() -> Iterator[subprocess.Popen[str]]:
    """A running server process; killed if a test leaves it running."""
    proc = processes.start("--strategy", "round-robin", "--grace-period", "2")
    yield proc
    processes.stop(proc)


def test_serves_and_stops_on_sigterm(process: subprocess.Popen[str]) -> None:
    """The process serves with its flags applied and exits 0 promptly on SIGTERM."""
    port = processes.port(process)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        stub.RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="10.0.0.1", port=11434))
        )
        reply = stub.SelectAgent(pb.SelectAgentRequest(), timeout=HANG_GUARD_S)
    assert (reply.agent.id, reply.strategy) == ("a", pb.STRATEGY_ROUND_ROBIN)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=HANG_GUARD_S) == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--session-ttl", "-5"], "argument --session-ttl: must be a finite number > 0"),
        (["--latency-smoothing", "0"], "argument --latency-smoothing: must be in (0, 1]"),
        (["--strategy", "fastest"], "argument --strategy: must be one of round-robin"),
    ],
)
def test_bad_flags_exit_2_with_one_line(flags: list[str], message: str) -> None:
    """An invalid option stops the process before it serves, with status 2 and a clear line."""
    done = subprocess.run(
        [processes.LB_SERVICE, "serve", *flags],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_port_in_use_exits_1(process: subprocess.Popen[str]) -> None:
    """A second server on a taken port says so in one line and exits 1."""
    port = processes.port(process)
    done = subprocess.run(
        [processes.LB_SERVICE, "serve", "--listen", f"127.0.0.1:{port}", "--log-format", "json"],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr


def test_start_up_line_names_the_version(process: subprocess.Popen[str]) -> None:
    """The `starting` log line carries the installed version, as `--version` prints it."""
    starting = processes.wait_for(process, "starting")
    assert starting["version"] == metadata.version("lb-service")


def test_the_server_runs_on_uvloop_by_default_and_on_asyncio_when_asked() -> None:
    """`auto` runs on uvloop (a dependency here); `--event-loop asyncio` on asyncio's own loop."""
    for flags, loop in (((), "uvloop"), (("--event-loop", "asyncio"), "asyncio")):
        proc = processes.start(*flags)
        try:
            starting = processes.wait_for(proc, "starting")
            assert (starting["event_loop"], starting["running_on"]) == (
                flags[-1] if flags else "auto",
                loop,
            )
            port = processes.port(proc)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.LoadBalancerStub(channel)
                agent = pb.Agent(id="a", host="10.0.0.1", port=11434)
                stub.RegisterAgent(pb.RegisterAgentRequest(agent=agent), timeout=HANG_GUARD_S)
                reply = stub.SelectAgent(pb.SelectAgentRequest(), timeout=HANG_GUARD_S)
            assert reply.agent.id == "a"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=HANG_GUARD_S) == 0
        finally:
            processes.stop(proc)


def test_a_silent_heartbeat_agent_goes_unhealthy_then_expires() -> None:
    """With --agent-expiry 1, the real process logs the miss, then removes the silent agent."""
    proc = processes.start("--agent-expiry", "1")
    try:
        port = processes.port(proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            agent = pb.Agent(id="hb", host="10.0.0.1", port=8000, heartbeat_ttl_ms=300)
            stub.RegisterAgent(pb.RegisterAgentRequest(agent=agent), timeout=HANG_GUARD_S)

            missed = processes.wait_for(proc, "agent_health_changed")
            expired = processes.wait_for(proc, "agent_expired")
            with pytest.raises(grpc.RpcError) as gone:
                stub.Heartbeat(pb.HeartbeatRequest(agent_id="hb"), timeout=HANG_GUARD_S)
    finally:
        processes.stop(proc)

    assert (missed["agent_id"], missed["health"]) == ("hb", "unhealthy")
    assert missed["reason"].startswith("heartbeat missed for ")
    assert expired["agent_id"] == "hb"
    assert gone.value.code() is grpc.StatusCode.NOT_FOUND
    assert "register it again" in (gone.value.details() or "")

"""examples/dispatcher.py against a real lb-service server and real emulated agents.

The server and the emulator run in the test's event loop on ephemeral loopback ports;
the dispatcher is its own process, as a user runs it. Round robin over four agents
makes the split exact: one agent answers 500 and one is dead (its port refuses), so
their leases must end failed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lb_service.client import AsyncLoadBalancerClient
from lb_service.emulate.command import agents_config
from lb_service.emulate.server import Emulator
from lb_service.model import StrategyName
from lb_service.service.server import LoadBalancerServer
from tests.emulate.running import running_emulator

DISPATCHER = Path(__file__).resolve().parents[2] / "examples" / "dispatcher.py"
FLEET = {
    "models": {"m": {"service_ms": {"mean": 20, "sigma": 0}}},
    "cluster": [
        {"id": "ollama", "models": ["m"], "speed": 1, "slots": 2},
        {"id": "vllm", "engine": "vllm", "models": ["m"], "speed": 1, "slots": 2},
        {"id": "broken", "models": ["m"], "speed": 1, "fault": "failing"},
        {"id": "gone", "models": ["m"], "speed": 1, "fault": "dead"},
    ],
}
COUNT = 12


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    """Four emulated agents (Ollama, vLLM, a failing and a dead Ollama); stopped after the test."""
    async with running_emulator(FLEET) as running:
        yield running


@pytest.mark.parametrize("load", [["--concurrency", "1"], ["--rate", "200"]])
async def test_leases_end_with_latencies_and_failures(
    server: LoadBalancerServer, emulator: Emulator, tmp_path: Path, load: list[str]
) -> None:
    """Closed or open loop, every lease ends: served ones with a latency, 5xx and refused failed."""
    agents_file = tmp_path / "agents.yaml"
    agents_file.write_text(agents_config(emulator.agents()))
    target = f"127.0.0.1:{server.port}"
    async with AsyncLoadBalancerClient(target) as lb:
        # Round robin makes the split over the four agents exact.
        await lb.set_strategy(StrategyName.ROUND_ROBIN)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DISPATCHER),
        "--target",
        target,
        "--register",
        str(agents_file),
        "--count",
        str(COUNT),
        *load,
        "--model",
        "m",
        "--timeout",
        "5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    summary = json.loads(out.decode().splitlines()[-1])
    async with AsyncLoadBalancerClient(target) as lb:
        loads = {load.agent_id: load for load in await lb.loads()}
    assert summary["requests"] == COUNT
    assert summary["by_agent"] == {
        "broken": {"ok": 0, "failed": 3},
        "gone": {"ok": 0, "failed": 3},
        "ollama": {"ok": 3, "failed": 0},
        "vllm": {"ok": 3, "failed": 0},
    }
    assert {a: (x.total_requests, x.failed_requests) for a, x in loads.items()} == {
        "broken": (3, 3),
        "gone": (3, 3),
        "ollama": (3, 0),
        "vllm": (3, 0),
    }
    assert all(load.active_connections == 0 for load in loads.values())
    assert loads["ollama"].avg_latency_ms > 0
    assert loads["vllm"].avg_latency_ms > 0

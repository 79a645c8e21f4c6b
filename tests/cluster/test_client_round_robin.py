"""The clients and the CLI spread calls over several replicas named in one target.

Replicas here are memory-store servers (no Redis needed): which server answered is
read from each one's Prometheus counter of handled RPCs.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from lb_service.cli import main
from lb_service.client import AsyncLoadBalancerClient, LoadBalancerClient
from lb_service.model import StrategyName
from tests.reliability.server_process import ServerProcess

CALLS = 30


@pytest.fixture(scope="module")
def servers() -> Iterator[list[ServerProcess]]:
    """Three servers, each exporting metrics on a port of its own."""
    with ThreadPoolExecutor(3) as pool:
        started = list(
            pool.map(lambda _: ServerProcess("--metrics-listen", "127.0.0.1:0"), range(3))
        )
    try:
        yield started
    finally:
        for server in started:
            server.close()


def _target(servers: list[ServerProcess]) -> str:
    return "ipv4:" + ",".join(server.address for server in servers)


def _handled(server: ServerProcess, method: str) -> int:
    port = server.wait_for("metrics_serving")["port"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    pattern = rf'grpc_server_handled_total{{[^}}]*grpc_method="{method}"[^}}]*}} (\S+)'
    return sum(int(float(count)) for count in re.findall(pattern, text))


def _spread(servers: list[ServerProcess], method: str, before: list[int]) -> list[int]:
    return [_handled(server, method) - b for server, b in zip(servers, before, strict=True)]


def test_blocking_client_spreads_calls_over_every_address_of_the_target(
    servers: list[ServerProcess],
) -> None:
    """LoadBalancerClient with an ipv4:A,B,C target sends calls to all three, round robin."""
    before = [_handled(server, "GetStatistics") for server in servers]
    with LoadBalancerClient(_target(servers)) as client:
        for _ in range(CALLS):
            client.statistics()
    spread = _spread(servers, "GetStatistics", before)
    assert sum(spread) == CALLS
    assert min(spread) >= CALLS // 3 - 2, spread  # round robin, once every replica is up


async def test_async_client_spreads_calls_over_every_address_of_the_target(
    servers: list[ServerProcess],
) -> None:
    """AsyncLoadBalancerClient with an ipv4:A,B,C target sends calls to all three, round robin."""
    before = [_handled(server, "ListAgents") for server in servers]
    async with AsyncLoadBalancerClient(_target(servers)) as client:
        for _ in range(CALLS):
            await client.agents()
    spread = _spread(servers, "ListAgents", before)
    assert sum(spread) == CALLS
    assert min(spread) >= CALLS // 3 - 2, spread


def test_cli_accepts_a_target_naming_several_replicas(
    servers: list[ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    """``lb-service strategy get --target ipv4:A,B,C`` answers through one of the replicas."""
    assert main(["strategy", "get", "--target", _target(servers)]) == 0
    assert StrategyName.LEAST_CONNECTIONS.value in capsys.readouterr().out

"""``lb-service serve --store``: what a replica does with its options at start and exit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.cli import main
from tests.cluster.conftest import StartCluster
from tests.e2e import processes
from tests.redis_server import free_port


def test_a_state_file_with_a_redis_store_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--state-file with --store redis://... exits 2: the state already lives in Redis."""
    code = main(
        ["serve", "--store", "redis://127.0.0.1:6379/0", "--state-file", str(tmp_path / "s")]
    )

    assert code == 2
    error = capsys.readouterr().err
    assert "config error" in error
    assert "state already lives in Redis" in error


def test_a_password_in_the_store_url_never_reaches_the_error_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config error names the store with its password hidden."""
    url = "redis://user:s3cret@127.0.0.1:6379/0"
    assert main(["serve", "--store", url, "--state-file", str(tmp_path / "s")]) == 2
    error = capsys.readouterr().err
    assert "s3cret" not in error
    assert "redis://user:***@127.0.0.1:6379/0" in error


def test_a_replica_whose_redis_does_not_answer_at_start_exits_naming_it() -> None:
    """A replica that cannot reach its store at start exits 1 and says which store."""
    store = f"redis://127.0.0.1:{free_port()}/0"
    process = processes.start("--store", store, "--store-timeout-ms", "100")
    try:
        _, error = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    assert process.returncode == 1
    assert f"127.0.0.1:{store.rsplit(':', 1)[1].split('/')[0]}" in error
    assert "Traceback" not in error


def _strategy(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        return int(stub.GetStatistics(pb.GetStatisticsRequest(), timeout=5).strategy)


def test_an_explicit_strategy_sets_the_shared_one_and_a_default_one_keeps_it(
    cluster: StartCluster,
) -> None:
    """An explicit --strategy at start sets the shared strategy; the default one leaves it."""
    (first,) = cluster(1, "--strategy", "round-robin")
    assert _strategy(first.address) == pb.STRATEGY_ROUND_ROBIN

    (second,) = cluster(1)  # the default strategy leaves the shared one alone
    assert _strategy(second.address) == pb.STRATEGY_ROUND_ROBIN
    assert _strategy(first.address) == pb.STRATEGY_ROUND_ROBIN

    (third,) = cluster(1, "--strategy", "weighted")
    for replica in (first, second, third):
        assert _strategy(replica.address) == pb.STRATEGY_WEIGHTED

"""Deadlines on every unary call, and retries with backoff on UNAVAILABLE only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import grpc
import pytest
from google.rpc import error_details_pb2

from lb_service.client import ClientError, LoadBalancerClient, RetryPolicy
from lb_service.model import StrategyName
from tests.client.fakes import Recorder, ScriptedServer, Seen, Ticker
from tests.client.serving import ThreadServer


def test_retries_unavailable_with_full_jitter(scripted: ScriptedServer) -> None:
    """Three UNAVAILABLE answers are retried after random() x 50, 100, 200 ms; the 4th wins."""
    scripted.servicer.failures = [grpc.StatusCode.UNAVAILABLE] * 3
    clock = Ticker()
    client = LoadBalancerClient(scripted.target, clock=clock, sleep=clock.sleep, random=lambda: 0.5)
    with client:
        stats = client.statistics()
    assert clock.sleeps == [0.025, 0.05, 0.1]
    assert scripted.servicer.calls == 4
    assert (stats.strategy, stats.total_selections) == (StrategyName.WEIGHTED, 3)


def test_gives_up_after_the_last_attempt_with_capped_backoff(dead_target: str) -> None:
    """A dead server is tried `attempts` times, waits capped at max_backoff_s, then raises."""
    clock = Ticker()
    policy = RetryPolicy(attempts=5, initial_backoff_s=0.4, multiplier=2.0, max_backoff_s=1.0)
    client = LoadBalancerClient(
        dead_target, retry=policy, timeout=60, clock=clock, sleep=clock.sleep, random=lambda: 1.0
    )
    with client, pytest.raises(ClientError) as caught:
        client.agents()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert clock.sleeps == [0.4, 0.8, 1.0, 1.0]


def test_default_policy_makes_four_attempts(dead_target: str) -> None:
    """By default: 4 attempts, waits up to 50 ms, doubling, so random()=1 gives 50, 100, 200 ms."""
    clock = Ticker()
    client = LoadBalancerClient(dead_target, clock=clock, sleep=clock.sleep, random=lambda: 1.0)
    with client, pytest.raises(ClientError):
        client.agents()
    assert clock.sleeps == [0.05, 0.1, 0.2]


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
    ],
)
def test_never_retries_other_codes(scripted: ScriptedServer, code: grpc.StatusCode) -> None:
    """Any code but UNAVAILABLE is raised after one attempt, without sleeping."""
    scripted.servicer.failures = [code]
    clock = Ticker()
    client = LoadBalancerClient(scripted.target, clock=clock, sleep=clock.sleep)
    with client, pytest.raises(ClientError) as caught:
        client.statistics()
    assert caught.value.code == code
    assert (scripted.servicer.calls, clock.sleeps) == (1, [])


def test_unavailable_decided_by_the_server_is_not_retried(server: ThreadServer) -> None:
    """NO_AGENTS_REGISTERED is an answer: raised at once, and counted as one failed selection."""
    clock = Ticker()
    with LoadBalancerClient(server.target, clock=clock, sleep=clock.sleep) as fresh:
        with pytest.raises(ClientError) as caught:
            fresh.select()
        assert fresh.statistics().failed_selections == 1
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "NO_AGENTS_REGISTERED",
    )
    assert clock.sleeps == []


@pytest.mark.parametrize(("domain", "attempts"), [("lb.v1", 1), ("example.com", 2)])
def test_only_reasonless_unavailable_is_retried(
    scripted: ScriptedServer, domain: str, attempts: int
) -> None:
    """An UNAVAILABLE with an lb.v1 reason is final; one from anything else is retried."""
    scripted.servicer.failures = [grpc.StatusCode.UNAVAILABLE]
    scripted.servicer.info = error_details_pb2.ErrorInfo(reason="BUSY", domain=domain)
    clock = Ticker()
    client = LoadBalancerClient(scripted.target, clock=clock, sleep=clock.sleep)
    with client, contextlib.suppress(ClientError):
        client.statistics()
    assert scripted.servicer.calls == attempts


def test_retries_share_the_deadline(scripted: ScriptedServer) -> None:
    """Each attempt gets the time left, and no wait runs past the deadline."""
    scripted.servicer.failures = [grpc.StatusCode.UNAVAILABLE] * 3
    clock, recorder = Ticker(), Recorder()
    client = LoadBalancerClient(
        scripted.target,
        timeout=0.12,
        interceptors=[recorder],
        clock=clock,
        sleep=clock.sleep,
        random=lambda: 1.0,
    )
    with client, pytest.raises(ClientError) as caught:
        client.statistics()
    # 50 ms fits in the 120 ms budget; the next 100 ms wait would not, so it gives up.
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert clock.sleeps == [0.05]
    assert [seen.timeout for seen in recorder.seen] == pytest.approx([0.12, 0.07])


def test_every_unary_call_gets_the_default_deadline(scripted: ScriptedServer) -> None:
    """A call carries a 5 s deadline by default; a client's or a call's timeout replaces it."""
    clock, recorder = Ticker(), Recorder()
    with LoadBalancerClient(scripted.target, interceptors=[recorder], clock=clock) as client:
        client.statistics()
        client.statistics(timeout=0.5)
    with LoadBalancerClient(
        scripted.target, timeout=2.0, interceptors=[recorder], clock=clock
    ) as client:
        client.statistics()
    assert [seen.timeout for seen in recorder.seen] == [5.0, 0.5, 2.0]


def test_watch_has_no_deadline(scripted: ScriptedServer) -> None:
    """The watch stream is opened without a deadline, since it is meant to stay open."""
    recorder = Recorder()
    client = LoadBalancerClient(scripted.target, interceptors=[recorder])
    with client, contextlib.closing(client.watch()) as updates:
        next(updates)
    assert recorder.seen == [Seen("/lb.v1.LoadBalancer/WatchLoads", None, ())]


def test_closing_a_watch_cancels_the_stream(scripted: ScriptedServer) -> None:
    """close() on the watch generator ends the RPC on the server while the channel stays open."""
    with LoadBalancerClient(scripted.target) as client:
        updates = client.watch()
        snapshot = next(updates)
        assert not scripted.servicer.watch_ended.is_set()
        updates.close()
        assert scripted.servicer.watch_ended.wait(10)
    assert (snapshot.loads[0].agent_id, snapshot.loads[0].active_connections) == ("a", 2)


def test_slow_server_raises_deadline_exceeded_once(scripted: ScriptedServer) -> None:
    """A server slower than the deadline gives DEADLINE_EXCEEDED, not retried."""
    client = LoadBalancerClient(scripted.target, timeout=0.2)
    with client, pytest.raises(ClientError) as caught:
        client.agents()
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert scripted.servicer.calls == 1


@pytest.mark.parametrize("timeout", [0.0, -1.0, float("inf"), float("nan")])
def test_unusable_timeouts_are_rejected(timeout: float) -> None:
    """A timeout must be finite and positive, per client and per call."""
    with pytest.raises(ValueError, match="timeout"):
        LoadBalancerClient(timeout=timeout)
    with LoadBalancerClient() as client, pytest.raises(ValueError, match="timeout"):
        client.statistics(timeout=timeout)


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(attempts=0),
        lambda: RetryPolicy(initial_backoff_s=-1.0),
        lambda: RetryPolicy(max_backoff_s=-1.0),
        lambda: RetryPolicy(multiplier=0.5),
    ],
    ids=["attempts", "initial_backoff_s", "max_backoff_s", "multiplier"],
)
def test_invalid_retry_policies_are_rejected(make: Callable[[], RetryPolicy]) -> None:
    """A policy that could make no attempt or wait a negative time is a ValueError."""
    with pytest.raises(ValueError, match="must be"):
        make()

"""The blocking client against a real server: every method returns exact domain values."""

from __future__ import annotations

import contextlib

import grpc
import pytest

from lb_service.client import ClientError, LoadBalancerClient
from lb_service.model import (
    Agent,
    AgentLoad,
    Compute,
    Hardware,
    LoadSnapshot,
    Selection,
    Statistics,
    StrategyName,
    Task,
)
from tests.client.serving import ThreadServer

CPU = Agent(
    id="cpu-1",
    host="10.0.0.11",
    port=11434,
    models=("llama3:8b",),
    hardware=Hardware(cpu_cores=32, ram_gb=128.0),
)
GPU = Agent(
    id="gpu-1",
    host="10.0.0.21",
    port=11434,
    models=("llama3:8b", "llama3:70b"),
    hardware=Hardware(gpu="RTX 4090", vram_gb=24.0, cpu_cores=16),
    metadata={"zone": "eu-1"},
    max_connections=4,
)


def _idle(agent_id: str, weight: float, slots: int) -> AgentLoad:
    return AgentLoad(agent_id, 0, 0.0, 0, 0, 0, weight, parallel_slots=slots)


@pytest.fixture
def fleet(client: LoadBalancerClient) -> LoadBalancerClient:
    """The client, with a CPU agent and a GPU agent registered in that order."""
    client.register(CPU)
    client.register(GPU)
    return client


def test_register_and_list_round_trip(fleet: LoadBalancerClient) -> None:
    """Registered agents come back from agents() equal, field for field, in registration order."""
    assert fleet.agents() == [CPU, GPU]


def test_deregister_removes_the_agent(fleet: LoadBalancerClient) -> None:
    """deregister() removes exactly the named agent."""
    fleet.deregister("cpu-1")
    assert fleet.agents() == [GPU]


def test_select_by_keywords(fleet: LoadBalancerClient) -> None:
    """select() with model and compute keywords returns the only eligible agent as a Selection."""
    selection = fleet.select(model="llama3:70b", compute=Compute.GPU)
    assert selection == Selection(agent=GPU, strategy=StrategyName.LEAST_CONNECTIONS)


def test_select_by_task_with_session_is_sticky(fleet: LoadBalancerClient) -> None:
    """A Task selects like keywords, and a session's second pick reports sticky=True.

    The first request is started and ended in between, as a dispatcher reports it: a
    pick left pending would count on the 1-slot CPU host and spill the second over.
    """
    first = fleet.select(Task(model="llama3:8b", compute=Compute.CPU), session_id="chat-1")
    fleet.end(fleet.start(first.agent.id), latency_ms=50.0)
    second = fleet.select(Task(model="llama3:8b"), session_id="chat-1")
    assert (first.agent, first.sticky) == (CPU, False)
    assert (second.agent, second.sticky) == (CPU, True)


def test_select_rejects_task_and_keywords_together(fleet: LoadBalancerClient) -> None:
    """Giving a Task and task keywords at once is a TypeError, not a silent choice."""
    with pytest.raises(TypeError, match="either task or"):
        fleet.select(Task(model="llama3:8b"), model="llama3:70b")


def test_select_among_candidates(client: LoadBalancerClient) -> None:
    """Candidates stand in for the registry, and the pick is one of them."""
    selection = client.select(min_vram_gb=16, candidates=[CPU, GPU])
    assert selection.agent == GPU


def test_select_with_acquire_opens_a_lease(fleet: LoadBalancerClient) -> None:
    """acquire=True returns a request id and the agent's active count becomes 1."""
    selection = fleet.select(model="llama3:70b", acquire=True)
    assert selection.request_id
    assert fleet.loads(["gpu-1"])[0].active_connections == 1


def test_start_and_end_by_request_id(fleet: LoadBalancerClient) -> None:
    """start() returns a lease id; end() by that id closes it and folds in the latency."""
    request_id = fleet.start("cpu-1")
    assert fleet.loads(["cpu-1"])[0].active_connections == 1
    fleet.end(request_id, latency_ms=40.0)
    fleet.end(request_id, latency_ms=40.0)  # idempotent: the second end changes nothing
    load = fleet.loads(["cpu-1"])[0]
    assert (load.active_connections, load.avg_latency_ms, load.total_requests) == (0, 40.0, 1)
    assert load.failed_requests == 0


def test_start_names_the_model_its_lease_is_for(
    server: ThreadServer, fleet: LoadBalancerClient
) -> None:
    """start(model=...) sends the model: the server's lease keeps it; too long a name is refused."""
    request_id = fleet.start("cpu-1", model="llama3:8b")
    assert server.balancer is not None
    leases = server.run(server.balancer._store.leases())  # only the store shows a lease's model
    assert leases[request_id].model == "llama3:8b"
    with pytest.raises(ClientError) as refused:
        fleet.start("cpu-1", model="m" * 1025)
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "model must be at most 1024 characters" in str(refused.value)


def test_end_by_agent_marks_failure(fleet: LoadBalancerClient) -> None:
    """end() without a request id closes the agent's oldest lease, and failed=True counts."""
    fleet.start("gpu-1")
    fleet.end(agent_id="gpu-1", latency_ms=12.5, failed=True)
    load = fleet.loads(["gpu-1"])[0]
    assert (load.active_connections, load.failed_requests, load.avg_latency_ms) == (0, 1, 12.5)


def test_loads_in_requested_order(fleet: LoadBalancerClient) -> None:
    """loads() answers in the order asked, and for every agent when none are named."""
    cpu, gpu = _idle("cpu-1", 1.0, 1), _idle("gpu-1", 24.0, 4)  # the slots guessed
    assert fleet.loads(["gpu-1", "cpu-1"]) == [gpu, cpu]
    assert fleet.loads() == [cpu, gpu]


def test_statistics(fleet: LoadBalancerClient) -> None:
    """statistics() carries the strategy and the exact counters."""
    fleet.select(model="llama3:70b")
    with pytest.raises(ClientError):
        fleet.select(model="mixtral")
    request_id = fleet.start("cpu-1")
    fleet.end(request_id, latency_ms=30.0)
    assert fleet.statistics() == Statistics(
        strategy=StrategyName.LEAST_CONNECTIONS,
        total_selections=1,
        failed_selections=1,
        total_requests=1,
        active_connections=0,
        avg_latency_ms=30.0,
        selections_by_agent={"gpu-1": 1},
    )


def test_update_weights_returns_every_effective_weight(fleet: LoadBalancerClient) -> None:
    """update_weights() applies the override and returns every agent's weight."""
    assert fleet.update_weights({"cpu-1": 2.5}) == {"cpu-1": 2.5, "gpu-1": 24.0}
    assert fleet.loads(["cpu-1"])[0].weight == 2.5


def test_set_strategy_returns_the_previous_one(fleet: LoadBalancerClient) -> None:
    """set_strategy() switches the strategy and returns the one it replaced."""
    assert fleet.set_strategy(StrategyName.WEIGHTED) == StrategyName.LEAST_CONNECTIONS
    assert fleet.set_strategy(StrategyName.ROUND_ROBIN) == StrategyName.WEIGHTED
    assert fleet.statistics().strategy == StrategyName.ROUND_ROBIN


def test_watch_yields_the_current_snapshot_first(fleet: LoadBalancerClient) -> None:
    """watch() starts with a full snapshot of the named agents, as LoadSnapshot values."""
    with contextlib.closing(fleet.watch(["gpu-1"], min_interval_ms=100)) as updates:
        first = next(updates)
    assert isinstance(first, LoadSnapshot)
    assert first.loads == (_idle("gpu-1", 24.0, 4),)
    assert first.timestamp_ms > 0


def test_watch_follows_changes(fleet: LoadBalancerClient) -> None:
    """After the first snapshot, a change made elsewhere arrives as the next snapshot."""
    with contextlib.closing(fleet.watch(["cpu-1"])) as updates:
        next(updates)
        fleet.start("cpu-1")
        assert next(updates).loads[0].active_connections == 1


def test_watch_of_unknown_agent_raises_client_error(client: LoadBalancerClient) -> None:
    """A watch the server refuses raises ClientError NOT_FOUND when iterated."""
    with pytest.raises(ClientError) as caught, contextlib.closing(client.watch(["nope"])) as w:
        next(w)
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "AGENT_NOT_FOUND",
    )


def test_client_after_server_stop_raises_unavailable(server: ThreadServer) -> None:
    """With the server gone, a call fails as ClientError UNAVAILABLE, not a raw grpc error."""
    server.stop()
    client = LoadBalancerClient(server.target, sleep=lambda _: None)
    with client, pytest.raises(ClientError) as caught:
        client.agents()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert not isinstance(caught.value, grpc.RpcError)

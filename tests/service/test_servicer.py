"""LoadBalancerServicer through grpc_testing: every RPC's answer and every documented error.

Each RPC goes through ``grpc_testing`` (no sockets) into the real async servicer, over
a real balancer and memory store driven by a fake clock, so responses are exact.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from lb.v1 import load_balancer_pb2 as pb

from tests.factories import START_MS
from tests.service.harness import Harness, assert_rejected, bad_request, rich_status

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

#: An agent with every field set, to show nothing is lost on the way in or out.
FULL_AGENT = pb.Agent(
    id="gpu-1",
    host="10.0.0.7",
    port=11434,
    models=["llama3:8b", "llama3:70b"],
    hardware=pb.Hardware(gpu="A100-80GB", vram_gb=80.0, cpu_cores=32, ram_gb=256.0),
    metadata={"zone": "eu-west-1a", "rack": "r12"},
    max_connections=4,
    parallel_slots=8,
)

ALL_STRATEGIES = (
    pb.STRATEGY_ROUND_ROBIN,
    pb.STRATEGY_LEAST_CONNECTIONS,
    pb.STRATEGY_WEIGHTED,
    pb.STRATEGY_LATENCY_BASED,
    pb.STRATEGY_CAPABILITY_MATCH,
)


def agent_pb(
    agent_id: str,
    *,
    port: int = 11434,
    models: tuple[str, ...] = ("llama3:8b",),
    gpu: str = "",
    vram_gb: float = 0.0,
    ram_gb: float = 32.0,
    max_connections: int = 0,
    parallel_slots: int = 0,
) -> pb.Agent:
    """An agent message like ``tests.factories.agent`` builds, spelled out field by field."""
    return pb.Agent(
        id=agent_id,
        host=f"{agent_id}.local",
        port=port,
        models=models,
        hardware=pb.Hardware(gpu=gpu, vram_gb=vram_gb, cpu_cores=8, ram_gb=ram_gb),
        max_connections=max_connections,
        parallel_slots=parallel_slots,
    )


def load_pb(
    agent_id: str,
    *,
    active: int = 0,
    avg_latency_ms: float = 0.0,
    last_request_at_ms: int = 0,
    total: int = 0,
    failed: int = 0,
    weight: float = 1.0,
    slots: int = 1,
) -> pb.AgentLoad:
    """The AgentLoad message expected for an agent (a CPU host's one slot by default)."""
    return pb.AgentLoad(
        agent_id=agent_id,
        active_connections=active,
        avg_latency_ms=avg_latency_ms,
        last_request_at_ms=last_request_at_ms,
        total_requests=total,
        failed_requests=failed,
        weight=weight,
        parallel_slots=slots,
        health=pb.AGENT_HEALTH_HEALTHY,
    )


def start(harness: Harness, agent_id: str) -> str:
    """RecordRequestStart; return the request_id."""
    response = harness.ok("RecordRequestStart", pb.RecordRequestStartRequest(agent_id=agent_id))
    request_id: str = response.request_id
    return request_id


# Helpers taking **fields pass them to a message constructor, which checks names and types.
def end(harness: Harness, **fields: Any) -> None:
    """RecordRequestEnd that must succeed."""
    harness.ok("RecordRequestEnd", pb.RecordRequestEndRequest(**fields))


def select(harness: Harness, **fields: Any) -> pb.SelectAgentResponse:
    """SelectAgent that must succeed."""
    response: pb.SelectAgentResponse = harness.ok("SelectAgent", pb.SelectAgentRequest(**fields))
    return response


# Happy paths, one RPC at a time.


def test_register_agent_stores_every_field(harness: Harness) -> None:
    """RegisterAgent answers an empty response and ListAgents returns the agent field for field."""
    response = harness.ok("RegisterAgent", pb.RegisterAgentRequest(agent=FULL_AGENT))

    assert response == pb.RegisterAgentResponse()
    assert harness.agents() == [FULL_AGENT]
    assert harness.loads() == [load_pb("gpu-1", weight=80.0, slots=8)]


def test_register_agent_takes_parallel_slots_up_to_1024(harness: Harness) -> None:
    """The largest slot count the API allows registers and comes back as given."""
    harness.ok("RegisterAgent", pb.RegisterAgentRequest(agent=agent_pb("a", parallel_slots=1024)))

    assert [a.parallel_slots for a in harness.agents()] == [1024]


def test_register_agent_upserts_in_place_keeping_history(harness: Harness) -> None:
    """Re-registering an id replaces the agent in its position and keeps its load and weight."""
    harness.register(agent_pb("a"), agent_pb("b"))
    start(harness, "a")
    harness.ok("UpdateWeights", pb.UpdateWeightsRequest(weights={"a": 7.0}))
    moved = pb.Agent(
        id="a",
        host="new.local",
        port=8000,
        models=["qwen2:7b"],
        hardware=pb.Hardware(gpu="L4", vram_gb=24.0, cpu_cores=16, ram_gb=64.0),
    )

    harness.register(moved)

    assert harness.agents() == [moved, agent_pb("b")]
    assert harness.loads("a") == [
        load_pb("a", active=1, total=1, last_request_at_ms=START_MS, weight=7.0, slots=4)
    ]


def test_deregister_agent_removes_it(harness: Harness) -> None:
    """DeregisterAgent answers an empty response and the agent leaves ListAgents."""
    harness.register(agent_pb("a"), agent_pb("b"))

    response = harness.ok("DeregisterAgent", pb.DeregisterAgentRequest(agent_id="a"))

    assert response == pb.DeregisterAgentResponse()
    assert harness.agents() == [agent_pb("b")]


def test_list_agents_is_empty_then_in_registration_order(harness: Harness) -> None:
    """ListAgents returns nothing before any registration, then agents in registration order."""
    assert harness.ok("ListAgents", pb.ListAgentsRequest()) == pb.ListAgentsResponse()

    harness.register(agent_pb("c"), agent_pb("a"), agent_pb("b"))

    assert harness.ok("ListAgents", pb.ListAgentsRequest()) == pb.ListAgentsResponse(
        agents=[agent_pb("c"), agent_pb("a"), agent_pb("b")]
    )


def test_select_agent_returns_agent_and_deciding_strategy(harness: Harness) -> None:
    """SelectAgent answers the registered agent, no request_id, the strategy and sticky=False."""
    harness.register(FULL_AGENT)

    response = select(harness)

    assert response == pb.SelectAgentResponse(
        agent=FULL_AGENT, request_id="", strategy=pb.STRATEGY_LEAST_CONNECTIONS, sticky=False
    )
    assert harness.loads() == [load_pb("gpu-1", weight=80.0, slots=8)]


def test_select_agent_with_acquire_opens_a_lease(harness: Harness) -> None:
    """SelectAgent with acquire returns a request_id and counts the request as started."""
    harness.register(agent_pb("a"))

    response = select(harness, acquire=True)

    assert response == pb.SelectAgentResponse(
        agent=agent_pb("a"), request_id="test-1", strategy=pb.STRATEGY_LEAST_CONNECTIONS
    )
    assert harness.loads() == [load_pb("a", active=1, total=1, last_request_at_ms=START_MS)]


def test_select_agent_honours_the_session_binding(harness: Harness) -> None:
    """A second SelectAgent with the same session_id returns the bound agent with sticky=True."""
    harness.register(agent_pb("a"), agent_pb("b"))

    first = select(harness, session_id="s")
    # Without the binding the tie between a and b would now rotate to b.
    second = select(harness, session_id="s")

    assert (first.agent.id, first.sticky) == ("a", False)
    assert second == pb.SelectAgentResponse(
        agent=agent_pb("a"), strategy=pb.STRATEGY_LEAST_CONNECTIONS, sticky=True
    )


def test_select_agent_among_candidates_tracks_them_by_id(harness: Harness) -> None:
    """SelectAgent with candidates picks among them, leaves the registry alone and tracks load."""
    candidates = [agent_pb("c1", vram_gb=24.0), agent_pb("c2")]

    response = select(harness, candidates=candidates, acquire=True)

    assert response == pb.SelectAgentResponse(
        agent=candidates[0], request_id="test-1", strategy=pb.STRATEGY_LEAST_CONNECTIONS
    )
    assert harness.agents() == []
    # An unregistered candidate has no hardware on record, so its weight is the default 1.
    assert harness.loads("c1") == [load_pb("c1", active=1, total=1, last_request_at_ms=START_MS)]


def test_record_request_start_returns_a_request_id(harness: Harness) -> None:
    """RecordRequestStart answers a fresh request_id and the agent's load counts the request."""
    harness.register(agent_pb("a"))

    response = harness.ok("RecordRequestStart", pb.RecordRequestStartRequest(agent_id="a"))

    assert response == pb.RecordRequestStartResponse(request_id="test-1")
    assert harness.loads() == [load_pb("a", active=1, total=1, last_request_at_ms=START_MS)]


def test_record_request_start_keeps_the_model_for_the_end_to_teach(harness: Harness) -> None:
    """A start naming a model opens a lease for that model, whose end is learned as that model's."""
    harness.register(agent_pb("a"))
    model = "llama3.2:3b chat"

    response = harness.ok(
        "RecordRequestStart", pb.RecordRequestStartRequest(agent_id="a", model=model)
    )
    store = harness.balancer._store  # what only the store shows: the lease's model
    [lease] = harness.loop.run(store.leases()).values()
    end(harness, agent_id="a", request_id=response.request_id, latency_ms=300.0)

    assert (lease.request_id, lease.model) == (response.request_id, model)
    stats = harness.loop.run(store.stats())["a"]
    assert stats.model_latency == ((model, math.log(300.0), 1, 1.0),)


def test_record_request_end_closes_the_lease_once(harness: Harness) -> None:
    """RecordRequestEnd with a request_id closes the lease, records latency; a repeat is a no-op."""
    harness.register(agent_pb("a"))
    request_id = start(harness, "a")
    harness.clock.advance(1.5)
    ended = pb.RecordRequestEndRequest(agent_id="a", request_id=request_id, latency_ms=120.0)

    response = harness.ok("RecordRequestEnd", ended)
    after_first = harness.loads()
    harness.clock.advance(1.0)
    harness.ok("RecordRequestEnd", ended)

    assert response == pb.RecordRequestEndResponse()
    expected = load_pb("a", avg_latency_ms=120.0, last_request_at_ms=START_MS + 1500, total=1)
    assert after_first == [expected]
    assert harness.loads() == [expected]


def test_record_request_end_without_request_id_closes_the_oldest_lease(harness: Harness) -> None:
    """RecordRequestEnd without request_id closes the agent's oldest lease and counts a failure."""
    harness.register(agent_pb("a"))
    oldest, newest = start(harness, "a"), start(harness, "a")

    end(harness, agent_id="a", latency_ms=50.0, failed=True)
    end(harness, request_id=oldest, latency_ms=999.0)  # already closed: a no-op
    after_oldest = harness.loads()
    end(harness, request_id=newest, latency_ms=50.0)

    assert after_oldest == [
        load_pb("a", active=1, avg_latency_ms=50.0, last_request_at_ms=START_MS, total=2, failed=1)
    ]
    assert harness.loads() == [
        load_pb("a", active=0, avg_latency_ms=50.0, last_request_at_ms=START_MS, total=2, failed=1)
    ]


def test_get_loads_reports_an_ejected_agent_until_it_returns(harness: Harness) -> None:
    """After five failures in a row GetLoads marks the agent ejected, with when it returns."""
    harness.register(agent_pb("a"), agent_pb("b"), agent_pb("c"))
    for _ in range(5):
        end(harness, agent_id="a", latency_ms=2.0, failed=True)
    (load,) = harness.ok("GetLoads", pb.GetLoadsRequest(agent_ids=["a"])).loads
    assert (load.ejected, load.ejected_until_ms) == (True, START_MS + 30_000)
    harness.clock.advance(30.0)
    (load,) = harness.ok("GetLoads", pb.GetLoadsRequest(agent_ids=["a"])).loads
    assert (load.ejected, load.ejected_until_ms) == (False, 0)


def test_get_loads_in_request_order_and_registration_order(harness: Harness) -> None:
    """GetLoads gives exact loads in request order, or all registered ones in registration order."""
    harness.register(agent_pb("a"), agent_pb("g", gpu="L4", vram_gb=24.0))
    request_id = start(harness, "g")
    harness.clock.advance(2.0)
    end(harness, request_id=request_id, latency_ms=80.0)
    g = load_pb(
        "g", avg_latency_ms=80.0, last_request_at_ms=START_MS + 2000, total=1, weight=24.0, slots=4
    )
    a = load_pb("a")

    assert harness.ok("GetLoads", pb.GetLoadsRequest(agent_ids=["g", "a"])) == (
        pb.GetLoadsResponse(loads=[g, a])
    )
    assert harness.ok("GetLoads", pb.GetLoadsRequest()) == pb.GetLoadsResponse(loads=[a, g])


def test_get_statistics_counts_selections_requests_and_latency(harness: Harness) -> None:
    """GetStatistics reports the strategy and exact service-wide counters."""
    harness.register(agent_pb("a"), agent_pb("b"))
    first = select(harness, acquire=True)
    second = select(harness, acquire=True)
    harness.unary("SelectAgent", pb.SelectAgentRequest(task=pb.TaskRequirements(model="nope")))
    start(harness, "a")
    end(harness, request_id=first.request_id, latency_ms=100.0)
    end(harness, request_id=second.request_id, latency_ms=300.0, failed=True)

    assert (first.agent.id, second.agent.id) == ("a", "b")
    assert harness.statistics() == pb.GetStatisticsResponse(
        strategy=pb.STRATEGY_LEAST_CONNECTIONS,
        total_selections=2,
        failed_selections=1,
        total_requests=3,
        active_connections=1,
        avg_latency_ms=200.0,
        selections_by_agent={"a": 1, "b": 1},
    )


def test_update_weights_returns_every_effective_weight(harness: Harness) -> None:
    """UpdateWeights applies the overrides and answers every registered agent's weight."""
    harness.register(agent_pb("a"), agent_pb("g", vram_gb=24.0))

    response = harness.ok("UpdateWeights", pb.UpdateWeightsRequest(weights={"a": 3.5, "g": 0.0}))

    assert response == pb.UpdateWeightsResponse(weights={"a": 3.5, "g": 0.0})
    assert harness.loads() == [load_pb("a", weight=3.5), load_pb("g", weight=0.0, slots=4)]
    assert harness.ok("UpdateWeights", pb.UpdateWeightsRequest()) == response


def test_update_weights_without_overrides_reports_default_weights(harness: Harness) -> None:
    """UpdateWeights with no entries changes nothing and answers the default weights (VRAM or 1)."""
    harness.register(agent_pb("a"), agent_pb("g", vram_gb=24.0))

    response = harness.ok("UpdateWeights", pb.UpdateWeightsRequest())

    assert response == pb.UpdateWeightsResponse(weights={"a": 1.0, "g": 24.0})


@pytest.mark.parametrize("strategy", ALL_STRATEGIES, ids=pb.Strategy.Name)
def test_set_strategy_returns_previous_and_applies_to_later_picks(
    harness: Harness, strategy: pb.Strategy.ValueType
) -> None:
    """SetStrategy answers the replaced strategy; statistics and selections report the new one."""
    harness.register(agent_pb("g", vram_gb=24.0))

    response = harness.ok("SetStrategy", pb.SetStrategyRequest(strategy=strategy))

    assert response == pb.SetStrategyResponse(previous=pb.STRATEGY_LEAST_CONNECTIONS)
    assert harness.statistics().strategy == strategy
    assert select(harness).strategy == strategy
    back = harness.ok("SetStrategy", pb.SetStrategyRequest(strategy=pb.STRATEGY_ROUND_ROBIN))
    assert back == pb.SetStrategyResponse(previous=strategy)


def test_drain_answers_open_leases_and_shows_in_loads(harness: Harness) -> None:
    """DrainAgent answers the open leases, loads show DRAINING, and undrain returns it."""
    harness.register(agent_pb("a"), agent_pb("b"))
    start(harness, "a")

    drained = harness.ok("DrainAgent", pb.DrainAgentRequest(agent_id="a"))

    assert drained == pb.DrainAgentResponse(active_connections=1)
    (load,) = harness.loads("a")
    assert (load.health, load.health_reason) == (pb.AGENT_HEALTH_DRAINING, "drained by admin")
    assert {select(harness).agent.id for _ in range(4)} == {"b"}
    harness.ok("DrainAgent", pb.DrainAgentRequest(agent_id="a", undrain=True))
    assert harness.loads("a")[0].health == pb.AGENT_HEALTH_HEALTHY


def test_heartbeat_of_a_registered_agent_is_ok(harness: Harness) -> None:
    """Heartbeat for a registered heartbeat agent answers OK and leaves it healthy."""
    agent = agent_pb("a")
    agent.heartbeat_ttl_ms = 30_000
    harness.register(agent)

    assert harness.ok("Heartbeat", pb.HeartbeatRequest(agent_id="a")) == pb.HeartbeatResponse()
    assert harness.loads("a")[0].health == pb.AGENT_HEALTH_HEALTHY


# Rejections: the code, the human message, the ErrorInfo reason, and no state change.


def _nothing(harness: Harness) -> None:
    pass


def _agent_a(harness: Harness) -> None:
    harness.register(agent_pb("a"))


def _agents_a_b(harness: Harness) -> None:
    harness.register(agent_pb("a"), agent_pb("b"))


def _lease_on_a(harness: Harness) -> None:
    harness.register(agent_pb("a"), agent_pb("b"))
    assert start(harness, "a") == "test-1"


def _a_full(harness: Harness) -> None:
    harness.register(agent_pb("a", max_connections=1))
    start(harness, "a")


def _a_weighted_at_zero(harness: Harness) -> None:
    harness.register(agent_pb("a"))
    harness.ok("SetStrategy", pb.SetStrategyRequest(strategy=pb.STRATEGY_WEIGHTED))
    harness.ok("UpdateWeights", pb.UpdateWeightsRequest(weights={"a": 0.0}))


@dataclass(frozen=True)
class Rejection:
    """One request the service must refuse, in the state ``setup`` builds."""

    method: str
    request: Message
    code: grpc.StatusCode
    details: str
    reason: str
    setup: Callable[[Harness], None] = field(default=_agent_a)


def _bad_agent(**hardware: float) -> pb.Agent:
    agent = agent_pb("a")
    for name, value in hardware.items():
        setattr(agent.hardware, name, value)
    return agent


def _task(**fields: Any) -> pb.SelectAgentRequest:
    return pb.SelectAgentRequest(task=pb.TaskRequirements(**fields))


def _weights(weights: dict[str, float]) -> pb.UpdateWeightsRequest:
    return pb.UpdateWeightsRequest(weights=weights)


def _end(**fields: Any) -> pb.RecordRequestEndRequest:
    return pb.RecordRequestEndRequest(**fields)


_STRATEGIES_TEXT = (
    "strategy must be one of STRATEGY_ROUND_ROBIN, STRATEGY_LEAST_CONNECTIONS, "
    "STRATEGY_WEIGHTED, STRATEGY_LATENCY_BASED, STRATEGY_CAPABILITY_MATCH; got "
)
_REGISTER = "RegisterAgent"
_SELECT = "SelectAgent"
_END = "RecordRequestEnd"
_WEIGHTS = "UpdateWeights"
_INVALID = "INVALID_ARGUMENT"
_AMOUNT = "must be a finite number >= 0, got"


def _a_draining(harness: Harness) -> None:
    harness.register(agent_pb("a"))
    harness.ok("DrainAgent", pb.DrainAgentRequest(agent_id="a"))


REJECTIONS: dict[str, Rejection] = {
    # Health (issue 13)
    "register-unknown-engine": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(
            agent=pb.Agent(id="a", host="a.local", port=1, engine=pb.Engine.ValueType(42))
        ),
        INVALID,
        "agent.engine must be one of ENGINE_UNSPECIFIED, ENGINE_OLLAMA, ENGINE_VLLM, "
        "ENGINE_SGLANG, ENGINE_HTTP, ENGINE_GRPC; got 42",
        _INVALID,
    ),
    "select-candidate-unknown-engine": Rejection(
        _SELECT,
        pb.SelectAgentRequest(
            candidates=[agent_pb("c"), pb.Agent(id="d", engine=pb.Engine.ValueType(7))]
        ),
        INVALID,
        "candidates[1].engine must be one of ENGINE_UNSPECIFIED, ENGINE_OLLAMA, ENGINE_VLLM, "
        "ENGINE_SGLANG, ENGINE_HTTP, ENGINE_GRPC; got 7",
        _INVALID,
    ),
    "register-heartbeat-ttl-too-long": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(
            agent=pb.Agent(id="a", host="a.local", port=1, heartbeat_ttl_ms=86_400_001)
        ),
        INVALID,
        "agent.heartbeat_ttl_ms: must be from 0 (no heartbeats) to 86400000 (one day), got "
        "86400001 (agent 'a')",
        _INVALID,
    ),
    "register-probe-path-without-slash": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="a.local", port=1, probe_path="h")),
        INVALID,
        'agent.probe_path: must be empty ("/") or a printable path starting with "/" of at '
        "most 1024 characters, got 'h' (agent 'a')",
        _INVALID,
    ),
    "heartbeat-empty-id": Rejection(
        "Heartbeat", pb.HeartbeatRequest(), INVALID, "agent_id must not be empty", _INVALID
    ),
    "heartbeat-unknown-agent": Rejection(
        "Heartbeat",
        pb.HeartbeatRequest(agent_id="ghost"),
        NOT_FOUND,
        "unknown agent 'ghost'; register it again (RegisterAgent), then heartbeat",
        "AGENT_NOT_FOUND",
    ),
    "drain-empty-id": Rejection(
        "DrainAgent", pb.DrainAgentRequest(), INVALID, "agent_id must not be empty", _INVALID
    ),
    "drain-unknown-agent": Rejection(
        "DrainAgent",
        pb.DrainAgentRequest(agent_id="ghost"),
        NOT_FOUND,
        "unknown agent 'ghost'; only registered agents can be drained",
        "AGENT_NOT_FOUND",
    ),
    "select-every-agent-draining": Rejection(
        _SELECT,
        pb.SelectAgentRequest(),
        grpc.StatusCode.UNAVAILABLE,
        "all 1 eligible agent(s) are draining; undrain one (lb-service drain AGENT --undo) "
        "or register another",
        "ALL_AGENTS_DRAINING",
        setup=_a_draining,
    ),
    # INVALID_ARGUMENT
    "register-empty-id": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=pb.Agent(host="h.local", port=1)),
        INVALID,
        "agent.id must not be empty",
        _INVALID,
    ),
    "register-unset-agent": Rejection(
        _REGISTER, pb.RegisterAgentRequest(), INVALID, "agent.id must not be empty", _INVALID
    ),
    "register-port-70000": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=agent_pb("a", port=70000)),
        INVALID,
        "agent.port: must be from 1 to 65535, got 70000 (agent 'a')",
        _INVALID,
    ),
    "register-parallel-slots-1025": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=agent_pb("a", parallel_slots=1025)),
        INVALID,
        "agent.parallel_slots: must be from 0 (guess from the hardware) to 1024, got 1025 "
        "(agent 'a')",
        _INVALID,
    ),
    "register-empty-host": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=pb.Agent(id="a", port=11434)),
        INVALID,
        "agent.host: required: the host name or address dispatchers connect to (agent 'a')",
        _INVALID,
    ),
    "register-port-0": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=agent_pb("a", port=0)),
        INVALID,
        "agent.port: must be from 1 to 65535, got 0 (agent 'a')",
        _INVALID,
    ),
    "register-negative-vram": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=_bad_agent(vram_gb=-1.0)),
        INVALID,
        f"agent 'a': hardware.vram_gb {_AMOUNT} -1.0",
        _INVALID,
    ),
    "register-nan-vram": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=_bad_agent(vram_gb=math.nan)),
        INVALID,
        f"agent 'a': hardware.vram_gb {_AMOUNT} nan",
        _INVALID,
    ),
    "register-inf-ram": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=_bad_agent(ram_gb=math.inf)),
        INVALID,
        f"agent 'a': hardware.ram_gb {_AMOUNT} inf",
        _INVALID,
    ),
    "register-empty-model-name": Rejection(
        _REGISTER,
        pb.RegisterAgentRequest(agent=agent_pb("a", models=("llama3:8b", ""))),
        INVALID,
        "agent 'a': model names must not be empty",
        _INVALID,
    ),
    "deregister-empty-id": Rejection(
        "DeregisterAgent",
        pb.DeregisterAgentRequest(),
        INVALID,
        "agent_id must not be empty",
        _INVALID,
    ),
    "select-duplicate-candidate-ids": Rejection(
        _SELECT,
        pb.SelectAgentRequest(candidates=[agent_pb("c"), agent_pb("d"), agent_pb("c")]),
        INVALID,
        "candidate id 'c' appears more than once",
        _INVALID,
    ),
    "select-candidate-port-70000": Rejection(
        _SELECT,
        pb.SelectAgentRequest(candidates=[agent_pb("c", port=70000)]),
        INVALID,
        "candidates[0].port: must be from 1 to 65535, got 70000 (agent 'c')",
        _INVALID,
    ),
    "select-candidate-parallel-slots-4294967295": Rejection(
        _SELECT,
        pb.SelectAgentRequest(candidates=[agent_pb("c"), agent_pb("d", parallel_slots=2**32 - 1)]),
        INVALID,
        "candidates[1].parallel_slots: must be from 0 (guess from the hardware) to 1024, "
        "got 4294967295 (agent 'd')",
        _INVALID,
    ),
    "select-candidate-without-host": Rejection(
        _SELECT,
        pb.SelectAgentRequest(candidates=[agent_pb("c"), pb.Agent(id="d", port=11434)]),
        INVALID,
        "candidates[1].host: required: the host name or address dispatchers connect to (agent 'd')",
        _INVALID,
    ),
    "select-nan-min-vram": Rejection(
        _SELECT,
        _task(min_vram_gb=math.nan),
        INVALID,
        f"task.min_vram_gb {_AMOUNT} nan",
        _INVALID,
    ),
    "select-negative-min-vram": Rejection(
        _SELECT,
        _task(min_vram_gb=-8.0),
        INVALID,
        f"task.min_vram_gb {_AMOUNT} -8.0",
        _INVALID,
    ),
    "select-unknown-compute-7": Rejection(
        _SELECT,
        _task(compute=7),
        INVALID,
        "task.compute must be COMPUTE_UNSPECIFIED, COMPUTE_CPU or COMPUTE_GPU; got 7",
        _INVALID,
    ),
    "start-empty-id": Rejection(
        "RecordRequestStart",
        pb.RecordRequestStartRequest(),
        INVALID,
        "agent_id must not be empty",
        _INVALID,
    ),
    "start-model-1025-characters": Rejection(
        "RecordRequestStart",
        pb.RecordRequestStartRequest(agent_id="a", model="m" * 1025),
        INVALID,
        "model must be at most 1024 characters, got 1025",
        _INVALID,
    ),
    "end-nan-latency": Rejection(
        _END,
        _end(agent_id="a", latency_ms=math.nan),
        INVALID,
        f"latency_ms {_AMOUNT} nan",
        _INVALID,
    ),
    "end-inf-latency": Rejection(
        _END,
        _end(agent_id="a", latency_ms=math.inf),
        INVALID,
        f"latency_ms {_AMOUNT} inf",
        _INVALID,
    ),
    "end-negative-latency": Rejection(
        _END,
        _end(agent_id="a", latency_ms=-1.0),
        INVALID,
        f"latency_ms {_AMOUNT} -1.0",
        _INVALID,
    ),
    "end-without-agent-or-request-id": Rejection(
        _END,
        _end(latency_ms=5.0),
        INVALID,
        "agent_id (or request_id) must not be empty",
        _INVALID,
    ),
    "end-request-id-of-another-agent": Rejection(
        _END,
        _end(agent_id="b", request_id="test-1", latency_ms=5.0),
        INVALID,
        "request_id 'test-1' was issued for agent 'a', not 'b'",
        _INVALID,
        _lease_on_a,
    ),
    "get-loads-empty-id": Rejection(
        "GetLoads",
        pb.GetLoadsRequest(agent_ids=["a", ""]),
        INVALID,
        "agent_id must not be empty",
        _INVALID,
    ),
    "get-loads-repeated-id": Rejection(
        "GetLoads",
        pb.GetLoadsRequest(agent_ids=["a", "a"]),
        INVALID,
        "agent_ids must not repeat an id",
        _INVALID,
    ),
    "weights-negative": Rejection(
        _WEIGHTS, _weights({"a": -1.0}), INVALID, f"weight of 'a' {_AMOUNT} -1.0", _INVALID
    ),
    "weights-nan": Rejection(
        _WEIGHTS, _weights({"a": math.nan}), INVALID, f"weight of 'a' {_AMOUNT} nan", _INVALID
    ),
    "weights-inf": Rejection(
        _WEIGHTS, _weights({"a": math.inf}), INVALID, f"weight of 'a' {_AMOUNT} inf", _INVALID
    ),
    "weights-empty-id": Rejection(
        _WEIGHTS, _weights({"": 2.0}), INVALID, "weights key must not be empty", _INVALID
    ),
    "strategy-unspecified": Rejection(
        "SetStrategy",
        pb.SetStrategyRequest(strategy=pb.STRATEGY_UNSPECIFIED),
        INVALID,
        _STRATEGIES_TEXT + "0",
        _INVALID,
    ),
    "strategy-unknown-99": Rejection(
        "SetStrategy",
        pb.SetStrategyRequest(strategy=pb.Strategy.ValueType(99)),
        INVALID,
        _STRATEGIES_TEXT + "99",
        _INVALID,
    ),
    # NOT_FOUND
    "deregister-unknown": Rejection(
        "DeregisterAgent",
        pb.DeregisterAgentRequest(agent_id="ghost"),
        NOT_FOUND,
        "unknown agent 'ghost'",
        "AGENT_NOT_FOUND",
    ),
    "start-unknown-agent": Rejection(
        "RecordRequestStart",
        pb.RecordRequestStartRequest(agent_id="ghost"),
        NOT_FOUND,
        "unknown agent 'ghost'",
        "AGENT_NOT_FOUND",
    ),
    "end-unknown-agent": Rejection(
        _END,
        _end(agent_id="ghost", latency_ms=5.0),
        NOT_FOUND,
        "unknown agent 'ghost'",
        "AGENT_NOT_FOUND",
    ),
    "end-never-issued-request-id": Rejection(
        _END,
        _end(agent_id="a", request_id="test-99", latency_ms=5.0),
        NOT_FOUND,
        "unknown request_id 'test-99': it was not issued by this service",
        "LEASE_NOT_FOUND",
        _lease_on_a,
    ),
    "end-foreign-request-id": Rejection(
        _END,
        _end(request_id="elsewhere-1", latency_ms=5.0),
        NOT_FOUND,
        "unknown request_id 'elsewhere-1': it was not issued by this service",
        "LEASE_NOT_FOUND",
        _lease_on_a,
    ),
    "get-loads-unknown": Rejection(
        "GetLoads",
        pb.GetLoadsRequest(agent_ids=["a", "ghost"]),
        NOT_FOUND,
        "unknown agent 'ghost'",
        "AGENT_NOT_FOUND",
    ),
    "weights-one-unknown-id": Rejection(
        _WEIGHTS,
        _weights({"a": 5.0, "ghost": 2.0}),
        NOT_FOUND,
        "unknown agent 'ghost'",
        "AGENT_NOT_FOUND",
        _agents_a_b,
    ),
    # UNAVAILABLE, FAILED_PRECONDITION, RESOURCE_EXHAUSTED
    "select-no-agents": Rejection(
        _SELECT,
        pb.SelectAgentRequest(),
        grpc.StatusCode.UNAVAILABLE,
        "no agents are registered; register one or pass candidates",
        "NO_AGENTS_REGISTERED",
        _nothing,
    ),
    "select-unserved-model": Rejection(
        _SELECT,
        _task(model="llama3:70b"),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no agent serves model 'llama3:70b'",
        "NO_ELIGIBLE_AGENT",
    ),
    "select-gpu-among-cpu-agents": Rejection(
        _SELECT,
        _task(compute=pb.COMPUTE_GPU),
        grpc.StatusCode.FAILED_PRECONDITION,
        "no agent has a GPU",
        "NO_ELIGIBLE_AGENT",
    ),
    "select-weighted-all-zero": Rejection(
        _SELECT,
        pb.SelectAgentRequest(),
        grpc.StatusCode.FAILED_PRECONDITION,
        "every eligible agent has weight 0, so the weighted strategy picks none; "
        "raise a weight with UpdateWeights or change strategy",
        "NO_ELIGIBLE_AGENT",
        _a_weighted_at_zero,
    ),
    "select-all-at-max-connections": Rejection(
        _SELECT,
        pb.SelectAgentRequest(acquire=True),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "all 1 eligible agent(s) are at max_connections; retry later",
        "ALL_AGENTS_BUSY",
        _a_full,
    ),
}


#: The request field each INVALID_ARGUMENT rejection names in its google.rpc.BadRequest.
BAD_FIELDS = {
    "register-empty-id": "agent.id",
    "register-unset-agent": "agent.id",
    "register-port-70000": "agent.port",
    "register-port-0": "agent.port",
    "register-empty-host": "agent.host",
    "register-parallel-slots-1025": "agent.parallel_slots",
    "register-negative-vram": "agent.hardware.vram_gb",
    "register-nan-vram": "agent.hardware.vram_gb",
    "register-inf-ram": "agent.hardware.ram_gb",
    "register-empty-model-name": "agent.models[1]",
    "deregister-empty-id": "agent_id",
    "select-duplicate-candidate-ids": "candidates[2].id",
    "select-candidate-port-70000": "candidates[0].port",
    "select-candidate-without-host": "candidates[1].host",
    "select-candidate-parallel-slots-4294967295": "candidates[1].parallel_slots",
    "select-nan-min-vram": "task.min_vram_gb",
    "select-negative-min-vram": "task.min_vram_gb",
    "select-unknown-compute-7": "task.compute",
    "start-empty-id": "agent_id",
    "start-model-1025-characters": "model",
    "end-nan-latency": "latency_ms",
    "end-inf-latency": "latency_ms",
    "end-negative-latency": "latency_ms",
    "end-without-agent-or-request-id": "agent_id",
    "end-request-id-of-another-agent": "agent_id",
    "get-loads-empty-id": "agent_ids[1]",
    "get-loads-repeated-id": "agent_ids",
    "weights-negative": "weights[a]",
    "weights-nan": "weights[a]",
    "weights-inf": "weights[a]",
    "weights-empty-id": "weights",
    "strategy-unspecified": "strategy",
    "strategy-unknown-99": "strategy",
    "register-unknown-engine": "agent.engine",
    "select-candidate-unknown-engine": "candidates[1].engine",
    "register-heartbeat-ttl-too-long": "agent.heartbeat_ttl_ms",
    "register-probe-path-without-slash": "agent.probe_path",
    "heartbeat-empty-id": "agent_id",
    "drain-empty-id": "agent_id",
}


def test_every_invalid_argument_case_states_its_field() -> None:
    """Each INVALID_ARGUMENT rejection above has its expected BadRequest field listed."""
    invalid = {name for name, case in REJECTIONS.items() if case.code == INVALID}
    assert set(BAD_FIELDS) == invalid


@pytest.mark.parametrize("name", list(REJECTIONS))
def test_invalid_argument_names_the_field_in_a_bad_request(harness: Harness, name: str) -> None:
    """INVALID_ARGUMENT carries one google.rpc.BadRequest field violation; other codes none."""
    case = REJECTIONS[name]
    case.setup(harness)

    result = harness.unary(case.method, case.request)

    found = bad_request(rich_status(result.trailing_metadata, result.code, result.details))
    if case.code != INVALID:
        assert found is None
        return
    assert found is not None
    assert [(v.field, v.description) for v in found.field_violations] == [
        (BAD_FIELDS[name], case.details)
    ]


@pytest.mark.parametrize("case", REJECTIONS.values(), ids=list(REJECTIONS))
def test_rejection_carries_code_message_and_error_info(harness: Harness, case: Rejection) -> None:
    """A refused request ends with its code, the human message and an lb.v1 ErrorInfo reason."""
    case.setup(harness)

    result = harness.unary(case.method, case.request)

    assert result.response is None
    assert_rejected(
        result.trailing_metadata,
        result.code,
        result.details,
        expected_code=case.code,
        expected_details=case.details,
        reason=case.reason,
    )


@pytest.mark.parametrize("case", REJECTIONS.values(), ids=list(REJECTIONS))
def test_rejection_changes_no_state(harness: Harness, case: Rejection) -> None:
    """A refused request leaves the registry and every load (weights included) as they were."""
    case.setup(harness)
    before = harness.state()

    assert harness.unary(case.method, case.request).code is case.code

    assert harness.state() == before


@pytest.mark.parametrize(
    "agent",
    [
        agent_pb("a", port=70000),
        _bad_agent(vram_gb=-1.0),
        _bad_agent(ram_gb=math.nan),
        agent_pb("a", models=("",)),
    ],
    ids=["port", "vram", "ram", "model"],
)
def test_rejected_reregistration_keeps_the_old_agent(harness: Harness, agent: pb.Agent) -> None:
    """A malformed re-registration of a known id leaves the registered agent untouched."""
    original = agent_pb("a", gpu="L4", vram_gb=24.0)
    harness.register(original, agent_pb("b"))

    assert harness.unary("RegisterAgent", pb.RegisterAgentRequest(agent=agent)).code is INVALID

    assert harness.agents() == [original, agent_pb("b")]
    assert harness.loads() == [load_pb("a", weight=24.0, slots=4), load_pb("b")]


@pytest.mark.parametrize(
    "weights",
    [{"a": 5.0, "ghost": 2.0}, {"ghost": 2.0, "a": 5.0}, {"a": 5.0, "b": math.nan}],
    ids=["valid-then-unknown", "unknown-then-valid", "valid-then-nan"],
)
def test_update_weights_is_all_or_nothing(harness: Harness, weights: dict[str, float]) -> None:
    """A refused UpdateWeights applies none of its entries, not even the valid one."""
    harness.register(agent_pb("a"), agent_pb("b"))

    assert harness.unary("UpdateWeights", _weights(weights)).code is not grpc.StatusCode.OK

    assert harness.ok("UpdateWeights", pb.UpdateWeightsRequest()) == pb.UpdateWeightsResponse(
        weights={"a": 1.0, "b": 1.0}
    )
    assert harness.loads("a") == [load_pb("a", weight=1.0)]


def test_refused_selections_count_as_failed_but_malformed_ones_do_not(harness: Harness) -> None:
    """Selections refused for lack of an agent count in failed_selections; invalid ones do not."""
    harness.unary("SelectAgent", pb.SelectAgentRequest())  # UNAVAILABLE
    harness.register(agent_pb("a", max_connections=1))
    harness.unary("SelectAgent", _task(model="llama3:70b"))  # FAILED_PRECONDITION
    start(harness, "a")
    harness.unary("SelectAgent", pb.SelectAgentRequest())  # RESOURCE_EXHAUSTED
    harness.unary("SelectAgent", _task(min_vram_gb=math.nan))  # INVALID_ARGUMENT

    statistics = harness.statistics()

    assert (statistics.total_selections, statistics.failed_selections) == (0, 3)


# WatchLoads.


def test_watch_loads_first_response_is_a_snapshot_of_the_requested_agents(
    harness: Harness,
) -> None:
    """WatchLoads first sends the requested agents' loads, in request order, stamped now."""
    harness.register(agent_pb("a"), agent_pb("b"), agent_pb("c", vram_gb=16.0))
    start(harness, "b")

    rpc = harness.watch(pb.WatchLoadsRequest(agent_ids=["c", "b"]))

    assert rpc.take_response() == pb.WatchLoadsResponse(
        loads=[
            load_pb("c", weight=16.0, slots=4),
            load_pb("b", active=1, total=1, last_request_at_ms=START_MS),
        ],
        timestamp_ms=START_MS,
    )
    rpc.cancel()


def test_watch_loads_without_ids_snapshots_every_registered_agent(harness: Harness) -> None:
    """WatchLoads without agent_ids first sends all registered loads, in registration order."""
    harness.register(agent_pb("b"), agent_pb("a"))
    harness.clock.advance(3.0)

    rpc = harness.watch(pb.WatchLoadsRequest())

    assert rpc.take_response() == pb.WatchLoadsResponse(
        loads=[load_pb("b"), load_pb("a")], timestamp_ms=START_MS + 3000
    )
    rpc.cancel()


def test_watch_loads_sends_a_new_snapshot_after_a_change(harness: Harness) -> None:
    """After the first snapshot, a load change produces a second full snapshot."""
    harness.register(agent_pb("a"), agent_pb("b"))
    rpc = harness.watch(pb.WatchLoadsRequest(agent_ids=["a", "b"], min_interval_ms=1))
    rpc.take_response()

    start(harness, "a")

    assert rpc.take_response() == pb.WatchLoadsResponse(
        loads=[load_pb("a", active=1, total=1, last_request_at_ms=START_MS), load_pb("b")],
        timestamp_ms=START_MS,
    )
    rpc.cancel()


@pytest.mark.parametrize(
    "agent_ids", [["ghost"], ["a", "ghost"]], ids=["only-unknown", "known-and-unknown"]
)
def test_watch_loads_unknown_id_ends_with_not_found(harness: Harness, agent_ids: list[str]) -> None:
    """WatchLoads naming an unknown agent sends no snapshot and ends with NOT_FOUND."""
    harness.register(agent_pb("a"))

    rpc = harness.watch(pb.WatchLoadsRequest(agent_ids=agent_ids))
    trailing_metadata, code, details = rpc.termination()

    assert_rejected(
        trailing_metadata,
        code,
        details,
        expected_code=NOT_FOUND,
        expected_details="unknown agent 'ghost'",
        reason="AGENT_NOT_FOUND",
    )
    with pytest.raises(ValueError, match="No more responses"):
        rpc.take_response()


def test_watch_loads_empty_id_ends_with_invalid_argument(harness: Harness) -> None:
    """WatchLoads naming an empty agent id sends no snapshot and ends with INVALID_ARGUMENT."""
    harness.register(agent_pb("a"))

    rpc = harness.watch(pb.WatchLoadsRequest(agent_ids=["a", ""]))
    trailing_metadata, code, details = rpc.termination()

    assert_rejected(
        trailing_metadata,
        code,
        details,
        expected_code=INVALID,
        expected_details="agent_id must not be empty",
        reason="INVALID_ARGUMENT",
    )
    with pytest.raises(ValueError, match="No more responses"):
        rpc.take_response()


def test_watch_loads_ends_cleanly_on_server_shutdown(harness: Harness) -> None:
    """begin_shutdown ends an open WatchLoads stream with OK after its snapshots."""
    harness.register(agent_pb("a"))
    rpc = harness.watch(pb.WatchLoadsRequest())
    rpc.take_response()

    harness.begin_shutdown()

    _, code, details = rpc.termination()
    assert (code, details) == (grpc.StatusCode.OK, "")


def test_watch_loads_cancel_releases_every_task(harness: Harness) -> None:
    """A client cancel ends the WatchLoads handler and leaves no task running on the loop."""
    harness.register(agent_pb("a"))
    rpc = harness.watch(pb.WatchLoadsRequest())
    rpc.take_response()

    rpc.cancel()

    assert harness.adapter.wait_idle()
    assert harness.loop.run(_other_tasks()) == []


async def _other_tasks() -> list[asyncio.Task[object]]:
    current = asyncio.current_task()
    return [task for task in asyncio.all_tasks() if task is not current]

"""The servicer against the lb.v1 contract: RPC set, enums, conversions, error-code table."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from operator import attrgetter

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

import lb_service
from lb_service import errors
from lb_service.errors import InvalidArgument, LoadBalancerError
from lb_service.model import Agent, Engine, Hardware, StrategyName
from lb_service.service import convert, status
from lb_service.service.servicer import LoadBalancerServicer
from tests.service.harness import SERVICE

#: The RPCs load_balancer.proto declares, and whether each streams its responses.
PROTO_RPCS = {
    "RegisterAgent": False,
    "DeregisterAgent": False,
    "ListAgents": False,
    "SelectAgent": False,
    "SelectAgents": False,
    "RecordRequestStart": False,
    "RecordRequestEnd": False,
    "GetLoads": False,
    "GetStatistics": False,
    "WatchLoads": True,
    "UpdateWeights": False,
    "SetStrategy": False,
    "Heartbeat": False,
    "DrainAgent": False,
}

#: The status code errors.py documents for each leaf of the error tree.
DOCUMENTED_CODES = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.AgentNotFound: grpc.StatusCode.NOT_FOUND,
    errors.LeaseNotFound: grpc.StatusCode.NOT_FOUND,
    errors.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    errors.NoAgentsRegistered: grpc.StatusCode.UNAVAILABLE,
    errors.NoEligibleAgent: grpc.StatusCode.FAILED_PRECONDITION,
    errors.AllAgentsBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.AllAgentsDraining: grpc.StatusCode.UNAVAILABLE,
    errors.AllAgentsSaturated: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def test_service_declares_exactly_the_fourteen_rpcs() -> None:
    """The LoadBalancer service has exactly the proto's fourteen RPCs, streaming as declared."""
    declared = {method.name: method.server_streaming for method in SERVICE.methods}

    assert len(SERVICE.methods) == 14
    assert declared == PROTO_RPCS
    assert not any(method.client_streaming for method in SERVICE.methods)


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
def test_rpc_request_and_response_types_follow_the_naming_rule(method: MethodDescriptor) -> None:
    """Each RPC takes <Name>Request and returns <Name>Response, both in package lb.v1."""
    assert method.input_type.full_name == f"lb.v1.{method.name}Request"
    assert method.output_type.full_name == f"lb.v1.{method.name}Response"


@pytest.mark.parametrize("name", PROTO_RPCS)
def test_every_rpc_is_overridden_by_the_servicer(name: str) -> None:
    """LoadBalancerServicer defines each RPC itself instead of inheriting the UNIMPLEMENTED stub."""
    owner = next(cls for cls in LoadBalancerServicer.__mro__ if name in vars(cls))
    implementation = getattr(LoadBalancerServicer, name)

    assert owner is not pb_grpc.LoadBalancerServicer
    assert implementation is not getattr(pb_grpc.LoadBalancerServicer, name)
    if PROTO_RPCS[name]:
        assert inspect.isasyncgenfunction(implementation)
    else:
        assert inspect.iscoroutinefunction(implementation)


def test_strategy_enum_matches_the_proto() -> None:
    """The Strategy enum has exactly the proto's names and numbers."""
    assert dict(pb.Strategy.items()) == {
        "STRATEGY_UNSPECIFIED": 0,
        "STRATEGY_ROUND_ROBIN": 1,
        "STRATEGY_LEAST_CONNECTIONS": 2,
        "STRATEGY_WEIGHTED": 3,
        "STRATEGY_LATENCY_BASED": 4,
        "STRATEGY_CAPABILITY_MATCH": 5,
    }


def test_engine_enum_matches_the_contract() -> None:
    """The Engine enum has exactly the names and numbers issue 13's contract binds."""
    assert dict(pb.Engine.items()) == {
        "ENGINE_UNSPECIFIED": 0,
        "ENGINE_OLLAMA": 1,
        "ENGINE_VLLM": 2,
        "ENGINE_SGLANG": 3,
        "ENGINE_HTTP": 4,
        "ENGINE_GRPC": 5,
    }


def test_agent_health_enum_matches_the_contract() -> None:
    """The AgentHealth enum has exactly the names and numbers issue 13's contract binds."""
    assert dict(pb.AgentHealth.items()) == {
        "AGENT_HEALTH_UNSPECIFIED": 0,
        "AGENT_HEALTH_HEALTHY": 1,
        "AGENT_HEALTH_UNHEALTHY": 2,
        "AGENT_HEALTH_DRAINING": 3,
    }


@pytest.mark.parametrize("engine", list(Engine), ids=lambda e: e.name)
def test_engine_numbers_name_the_same_engines(engine: Engine) -> None:
    """Each domain engine maps to the Engine number of the same name, and back."""
    message = pb.Agent(id="a", engine=getattr(pb, f"ENGINE_{engine.name}"))

    assert convert.agent_from_pb(message).engine is engine
    assert convert.agent_to_pb(convert.agent_from_pb(message)).engine == message.engine


@pytest.mark.parametrize(
    ("where", "field"), [("agent", "agent.engine"), ("candidates[3]", "candidates[3].engine")]
)
def test_unknown_engine_number_is_invalid_naming_the_field(where: str, field: str) -> None:
    """An Engine number the proto does not define is INVALID_ARGUMENT naming the field's path."""
    with pytest.raises(InvalidArgument, match="ENGINE_OLLAMA") as caught:
        convert.agent_from_pb(pb.Agent(id="a", engine=pb.Engine.ValueType(99)), where)

    assert caught.value.field == field


def test_compute_enum_matches_the_proto() -> None:
    """The Compute enum has exactly the proto's names and numbers."""
    assert dict(pb.Compute.items()) == {
        "COMPUTE_UNSPECIFIED": 0,
        "COMPUTE_CPU": 1,
        "COMPUTE_GPU": 2,
    }


#: An Agent message with every field set to a non-default value.
FULL_AGENT = pb.Agent(
    id="gpu-1",
    host="10.0.0.7",
    port=65535,
    models=["llama3:8b", "llama3:70b"],
    hardware=pb.Hardware(gpu="A100-80GB", vram_gb=80.5, cpu_cores=32, ram_gb=256.25),
    metadata={"zone": "eu-west-1a", "rack": "r12"},
    max_connections=4,
    parallel_slots=8,
    engine=pb.ENGINE_OLLAMA,
    heartbeat_ttl_ms=15_000,
    probe_path="/healthz",
)


def _unset_fields(message: Message, prefix: str = "") -> list[str]:
    """Dotted names of fields left unset or at their default, recursing into sub-messages."""
    unset = []
    for field in message.DESCRIPTOR.fields:
        name = prefix + field.name
        if field.message_type is not None and not field.is_repeated:
            if message.HasField(field.name):
                unset += _unset_fields(getattr(message, field.name), f"{name}.")
            else:
                unset.append(name)
        elif not getattr(message, field.name):
            unset.append(name)
    return unset


def test_agent_round_trips_through_the_domain_model() -> None:
    """agent_to_pb(agent_from_pb(m)) == m for an Agent with every field set."""
    assert _unset_fields(FULL_AGENT) == []

    assert convert.agent_to_pb(convert.agent_from_pb(FULL_AGENT)) == FULL_AGENT


def test_agent_from_pb_reads_every_field() -> None:
    """agent_from_pb maps each Agent field onto the matching domain field."""
    assert convert.agent_from_pb(FULL_AGENT) == Agent(
        id="gpu-1",
        host="10.0.0.7",
        port=65535,
        models=("llama3:8b", "llama3:70b"),
        hardware=Hardware(gpu="A100-80GB", vram_gb=80.5, cpu_cores=32, ram_gb=256.25),
        metadata={"zone": "eu-west-1a", "rack": "r12"},
        max_connections=4,
        parallel_slots=8,
        engine=Engine.OLLAMA,
        heartbeat_ttl_ms=15_000,
        probe_path="/healthz",
    )


@pytest.mark.parametrize(
    ("number", "strategy"),
    [
        (pb.STRATEGY_ROUND_ROBIN, StrategyName.ROUND_ROBIN),
        (pb.STRATEGY_LEAST_CONNECTIONS, StrategyName.LEAST_CONNECTIONS),
        (pb.STRATEGY_WEIGHTED, StrategyName.WEIGHTED),
        (pb.STRATEGY_LATENCY_BASED, StrategyName.LATENCY_BASED),
        (pb.STRATEGY_CAPABILITY_MATCH, StrategyName.CAPABILITY_MATCH),
    ],
    ids=lambda value: getattr(value, "name", None),
)
def test_strategy_numbers_name_the_same_strategies(
    number: pb.Strategy.ValueType, strategy: StrategyName
) -> None:
    """Each Strategy enum number maps to the domain strategy of the same name, both ways."""
    assert convert.strategy_from_pb(number) is strategy
    assert convert.strategy_to_pb(strategy) == number


@pytest.mark.parametrize(
    "number",
    [n for n in pb.Strategy.values() if n != pb.STRATEGY_UNSPECIFIED],
    ids=pb.Strategy.Name,
)
def test_strategy_round_trips(number: pb.Strategy.ValueType) -> None:
    """strategy_to_pb(strategy_from_pb(n)) == n for each of the five strategies."""
    assert convert.strategy_to_pb(convert.strategy_from_pb(number)) == number


def test_every_domain_strategy_has_a_distinct_proto_number() -> None:
    """strategy_to_pb maps the five domain strategies one-to-one onto the non-zero enum numbers."""
    numbers = [convert.strategy_to_pb(strategy) for strategy in StrategyName]

    assert sorted(numbers) == [1, 2, 3, 4, 5]
    assert [convert.strategy_from_pb(n) for n in numbers] == list(StrategyName)


@pytest.mark.parametrize("number", [pb.STRATEGY_UNSPECIFIED, 6, 99, -1])
def test_strategy_from_pb_rejects_unspecified_and_unknown(number: int) -> None:
    """strategy_from_pb raises InvalidArgument for STRATEGY_UNSPECIFIED and unknown numbers."""
    with pytest.raises(InvalidArgument, match=f"; got {number}$"):
        convert.strategy_from_pb(number)


def _imported_lb_service() -> None:
    """Import every lb_service module so the subclass walk sees every error class."""
    for module in pkgutil.walk_packages(lb_service.__path__, "lb_service."):
        importlib.import_module(module.name)


def _subclasses(cls: type[LoadBalancerError]) -> Iterator[type[LoadBalancerError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _production_leaves() -> set[type[LoadBalancerError]]:
    _imported_lb_service()
    # Only lb_service's own classes: a test may define throwaway subclasses.
    tree = [c for c in _subclasses(LoadBalancerError) if c.__module__.startswith("lb_service")]
    return {c for c in tree if not any(sub in tree for sub in c.__subclasses__())}


def test_error_tree_leaves_are_exactly_the_documented_ones() -> None:
    """The leaves of the LoadBalancerError tree are exactly those the code table documents."""
    assert _production_leaves() == set(DOCUMENTED_CODES)


@pytest.mark.parametrize("leaf", sorted(_production_leaves(), key=attrgetter("__name__")), ids=str)
def test_code_for_maps_each_leaf_to_its_documented_code(leaf: type[LoadBalancerError]) -> None:
    """status.code_for returns the documented status code for every leaf error."""
    error = leaf.__new__(leaf)  # constructors differ; code_for only looks at the type

    assert status.code_for(error) is DOCUMENTED_CODES[leaf]


def test_code_for_reraises_an_unmapped_error() -> None:
    """status.code_for re-raises (as the same object) a LoadBalancerError its table does not map."""

    class Unmapped(LoadBalancerError):
        pass

    error = Unmapped("not in the table")

    with pytest.raises(Unmapped) as raised:
        status.code_for(error)
    assert raised.value is error

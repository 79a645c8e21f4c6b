"""Every lb.v1.LoadBalancer RPC has a method on both clients, and that method sends it.

The list of RPCs comes from the service descriptor, so an RPC added to the proto
without client support fails here (like temporalio's test_all_grpc_calls_present).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from lb.v1 import load_balancer_pb2 as pb

from lb_service.client import AsyncLoadBalancerClient, ClientError, LoadBalancerClient
from lb_service.model import Agent, SelectionRequest, StrategyName, Task
from tests.client.fakes import AsyncRecorder, AsyncStreamRecorder, Recorder, Seen
from tests.client.serving import ThreadServer

SERVICE = pb.DESCRIPTOR.services_by_name["LoadBalancer"]
AGENT = Agent("cpu-1", host="10.0.0.11", port=11434, models=("llama3:8b",))

#: RPC name → the client method that makes it, and the arguments to call it with.
#: A new RPC in the proto must get an entry here, and so a method on both clients.
CLIENT_METHODS: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
    "RegisterAgent": ("register", (AGENT,), {}),
    "DeregisterAgent": ("deregister", ("cpu-1",), {}),
    "ListAgents": ("agents", (), {}),
    "SelectAgent": ("select", (), {"model": "llama3:8b"}),
    "SelectAgents": ("select_many", ([SelectionRequest(Task(model="llama3:8b"))],), {}),
    "RecordRequestStart": ("start", ("cpu-1",), {}),
    "RecordRequestEnd": ("end", ("no-such-lease",), {"latency_ms": 1.0}),
    "GetLoads": ("loads", (), {}),
    "GetStatistics": ("statistics", (), {}),
    "WatchLoads": ("watch", (), {}),
    "UpdateWeights": ("update_weights", ({"cpu-1": 2.0},), {}),
    "SetStrategy": ("set_strategy", (StrategyName.WEIGHTED,), {}),
    "Heartbeat": ("heartbeat", ("cpu-1",), {}),
    "DrainAgent": ("drain", ("cpu-1",), {}),
}


def _path(rpc: str) -> str:
    """The method path grpc sends for ``rpc`` of lb.v1.LoadBalancer."""
    return f"/{SERVICE.full_name}/{rpc}"


def _methods(seen: list[Seen]) -> list[str]:
    """The method paths interceptors saw (grpc.aio hands them over as bytes)."""
    return [m.decode() if isinstance(m, bytes) else m for m in (call.method for call in seen)]


def test_every_rpc_has_a_client_method() -> None:
    """The mapping names exactly the descriptor's RPCs: none missing, none stale."""
    assert set(CLIENT_METHODS) == set(SERVICE.methods_by_name)


@pytest.mark.parametrize("rpc", sorted(CLIENT_METHODS))
def test_both_clients_expose_the_method_alike(rpc: str) -> None:
    """Both clients have the RPC's method, public, documented, with the same parameters."""
    name = CLIENT_METHODS[rpc][0]
    sync = getattr(LoadBalancerClient, name, None)
    aio = getattr(AsyncLoadBalancerClient, name, None)
    assert callable(sync), name
    assert callable(aio), name
    assert sync.__doc__
    assert aio.__doc__
    assert inspect.signature(sync).parameters == inspect.signature(aio).parameters
    # A server stream is iterated, not awaited; every unary method is awaited.
    streaming = SERVICE.methods_by_name[rpc].server_streaming
    assert inspect.iscoroutinefunction(aio) is not streaming


def _call_sync(client: LoadBalancerClient, rpc: str) -> None:
    """Make ``rpc`` through its client method; the server's answer does not matter here."""
    name, args, kwargs = CLIENT_METHODS[rpc]
    method: Callable[..., Any] = getattr(client, name)
    with contextlib.suppress(ClientError):
        result = method(*args, **kwargs)
        if inspect.isgenerator(result):
            with contextlib.closing(result):
                next(result)


async def _call_async(client: AsyncLoadBalancerClient, rpc: str) -> None:
    """Make ``rpc`` through its asyncio client method, answer ignored."""
    name, args, kwargs = CLIENT_METHODS[rpc]
    method: Callable[..., Any] = getattr(client, name)
    with contextlib.suppress(ClientError):
        result = method(*args, **kwargs)
        if inspect.isasyncgen(result):
            with contextlib.suppress(StopAsyncIteration):
                await anext(result)
            await result.aclose()
        else:
            await result


def test_each_sync_method_sends_its_rpc(server: ThreadServer) -> None:
    """Calling the blocking client's method for an RPC sends that RPC and only it."""
    recorder = Recorder()
    with LoadBalancerClient(server.target, interceptors=[recorder]) as client:
        for rpc in sorted(CLIENT_METHODS):
            recorder.seen.clear()
            _call_sync(client, rpc)
            assert _methods(recorder.seen) == [_path(rpc)], rpc


async def test_each_async_method_sends_its_rpc(server: ThreadServer) -> None:
    """Calling the asyncio client's method for an RPC sends that RPC and only it."""
    seen: list[Seen] = []
    interceptors = [AsyncRecorder(seen), AsyncStreamRecorder(seen)]
    async with AsyncLoadBalancerClient(server.target, interceptors=interceptors) as client:
        for rpc in sorted(CLIENT_METHODS):
            seen.clear()
            await _call_async(client, rpc)
            assert _methods(seen) == [_path(rpc)], rpc

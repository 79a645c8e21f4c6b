"""What an emulated agent does with requests: draws, slots, queue limit, loads and eviction."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from lb_service.emulate.host import Busy, Host
from lb_service.emulate.spec import Fault, parse
from lb_service.model import Engine


def _host(time_scale: float = 0.001, **agent: object) -> Host:
    spec = parse(
        {
            "models": {
                "a": {"service_ms": {"median": 1000, "p99": 10000}},
                "b": {"service_ms": {"mean": 100, "sigma": 0}},
            },
            "cluster": [{"id": "h", "models": ["a", "b"], "speed": 2, **agent}],
        }
    )
    return Host(spec.agents[0], spec.service, random.Random(7), time_scale)


def test_service_times_are_bounded_and_scaled() -> None:
    """Draws stay within the model's 1st-99th percentiles, divided by speed, times the scale."""
    host = _host(time_scale=1.0)
    draws = [host.service_s("a") for _ in range(2000)]
    assert min(draws) >= 1000 * 1000 / 10000 / 1000 / 2 * (1 - 1e-9)  # p1 = median^2 / p99
    assert max(draws) <= 10000 / 1000 / 2 * (1 + 1e-9)
    assert math.isclose(host.service_s("b"), 0.05)


def test_a_slow_fault_multiplies_service_time() -> None:
    """A slow agent takes its fault's factor times as long."""
    host = _host(time_scale=1.0)
    host.set_fault(Fault("slow", 3.0))
    assert math.isclose(host.service_s("b"), 0.15)


def test_same_seed_same_draws() -> None:
    """Two hosts seeded alike draw the same service times."""
    assert [_host().service_s("a") for _ in range(3)] == [_host().service_s("a") for _ in range(3)]


async def test_least_recently_used_model_is_evicted() -> None:
    """With max_loaded_models 1, a request for another model loads it in place of the first."""
    host = _host(load_ms=10, max_loaded_models=1)
    async with host.slot("a") as first:
        pass
    async with host.slot("a") as again:
        pass
    assert host.loaded_models == ["a"]
    async with host.slot("b") as other:
        pass
    assert host.loaded_models == ["b"]
    # Two loads (a, then b), one eviction (a), 10 ms of loading each.
    assert (host.loads, host.evictions, host.load_s) == (2, 1, 0.02)
    assert first.load_s > 0
    assert again.load_s == 0
    assert other.load_s > 0


async def test_concurrent_requests_share_one_load() -> None:
    """Requests arriving while their model loads wait for that load, not a second one."""
    host = _host(load_ms=20, slots=2, max_loaded_models=1)

    async def one() -> float:
        async with host.slot("a") as work:
            return work.load_s

    loads = await asyncio.gather(one(), one())
    assert all(load > 0 for load in loads)
    assert host.loaded_models == ["a"]


async def test_a_full_queue_refuses() -> None:
    """With every slot busy and max_queue requests waiting, the next request is Busy."""
    host = _host(slots=1, max_queue=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with host.slot("b"):
            await release.wait()

    holder = asyncio.create_task(hold())
    waiter = asyncio.create_task(hold())
    for _ in range(100):
        if sum(host.waiting.values()) == 1:
            break
        await asyncio.sleep(0.01)
    assert (sum(host.running.values()), sum(host.waiting.values())) == (1, 1)
    with pytest.raises(Busy):
        async with host.slot("b"):
            pass
    release.set()
    await asyncio.gather(holder, waiter)
    assert sum(host.running.values()) == 0


def test_vllm_has_its_models_loaded_from_the_start() -> None:
    """A vLLM agent serves its models at once; a dead one comes back with them loaded."""
    host = _host(engine="vllm")
    assert host.spec.engine is Engine.VLLM
    assert host.loaded_models == ["a", "b"]
    host.set_fault(Fault("dead"))
    assert host.loaded_models == ["a", "b"]

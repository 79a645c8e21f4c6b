"""Model loads in the simulator: a model not in memory loads first and evicts the oldest."""

from __future__ import annotations

from typing import Any

from tests.simulate.builders import requests, run, scenario

_MODELS = {
    "m": {"service_ms": {"median": 100, "p99": 400}},
    "n": {"service_ms": {"median": 100, "p99": 400}},
}


def _agents(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"id": "a", "count": count, "models": ["m", "n"], "speed": 1.0, "slots": 1, **extra}]


def _mix() -> dict[str, Any]:
    return {"rate_per_s": 5, "mix": [{"model": "m", "share": 1}, {"model": "n", "share": 1}]}


async def test_a_model_not_in_memory_loads_first_and_evicts_the_one_held() -> None:
    """One slot, one model held, 1 s loads: m loads, m again is ready, n loads, m loads again."""
    sim = scenario(
        models=_MODELS,
        cluster=_agents(1, load_ms=1000, max_loaded_models=1),
        workload=_mix(),
    )
    # kinds: 0 is m, 1 is n; each request 100 ms of service, far apart.
    stream = requests([(0, 100), (5000, 100), (10000, 100), (15000, 100)], kind=[0, 0, 1, 0])

    out = await run(sim, stream, "round-robin")

    assert [f - s for f, s in zip(out.finish_ms, out.start_ms, strict=True)] == [
        1100,
        100,
        1100,
        1100,
    ]


async def test_without_a_load_time_models_are_always_ready() -> None:
    """load_ms 0 (the default): no request waits for a model, whatever the mix."""
    sim = scenario(models=_MODELS, cluster=_agents(1), workload=_mix())
    out = await run(sim, requests([(0, 100), (5000, 100)], kind=[0, 1]), "round-robin")
    assert [f - s for f, s in zip(out.finish_ms, out.start_ms, strict=True)] == [100, 100]


async def test_the_oracle_counts_the_load_and_goes_where_the_model_is() -> None:
    """Once one agent holds m, the oracle queues an m request behind it rather than load m again."""
    sim = scenario(
        models=_MODELS,
        cluster=_agents(2, load_ms=10_000, max_loaded_models=1),
        workload=_mix(),
    )
    # t=0: m loads on one agent (either: a tie). t=40000: m, 600 ms, on it (no load).
    # t=40010: m, 100 ms: behind it there (40700) beats a 10 s load on the other (50110).
    stream = requests([(0, 100), (40_000, 600), (40_010, 100)], kind=[0, 0, 0])

    out = await run(sim, stream, "oracle")

    assert out.agent[1] == out.agent[2] == out.agent[0]
    assert out.finish_ms[2] == 40_700

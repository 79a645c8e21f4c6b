"""Model cost: each agent learns how long each model's requests take against its usual mix."""

from __future__ import annotations

import pytest

from lb_service.model import Agent, Task
from lb_service.model_cost import MAX_MODELS, TRUST_SAMPLES, observe, service_factor
from lb_service.store.base import AgentStats
from tests.factories import FakeClock, agent, balancer

CHAT, EMBED = "llama3.2:3b", "nomic-embed-text"


def taught(samples: list[tuple[str, float]]) -> AgentStats:
    """An agent's figures after successes of (model, latency ms), in order."""
    stats = AgentStats()
    for model, latency_ms in samples:
        stats = observe(stats, model, latency_ms)
    return stats


def test_factor_is_the_models_typical_latency_over_the_agents_mean() -> None:
    """Equal shares of 100 ms and 400 ms requests: the mean is 250 ms, a 400 ms one is 1.6 of it."""
    stats = taught([(EMBED, 100.0), (CHAT, 400.0)] * 8)
    assert service_factor(stats, CHAT) == pytest.approx(1.6, rel=0.03)
    assert service_factor(stats, EMBED) == pytest.approx(0.4, rel=0.03)


def test_shares_follow_the_recent_mix() -> None:
    """Once the agent serves mostly embeddings, a chat request is worth many average ones."""
    stats = taught([(EMBED, 100.0), (CHAT, 400.0)] * 8 + [(EMBED, 100.0)] * 64)
    assert service_factor(stats, CHAT) > 3.0


def test_factor_is_one_until_the_model_is_trusted_and_for_no_model() -> None:
    """A model with fewer than TRUST_SAMPLES successes, an unknown one and none count as 1."""
    stats = taught([(EMBED, 100.0)] * 10 + [(CHAT, 4000.0)] * (TRUST_SAMPLES - 1))
    assert service_factor(stats, CHAT) == 1.0
    assert service_factor(stats, "never-seen") == 1.0
    assert service_factor(stats, "") == 1.0
    assert service_factor(AgentStats(), CHAT) == 1.0
    assert service_factor(observe(stats, CHAT, 4000.0), CHAT) > 1.0


def test_one_huge_request_moves_the_factor_little() -> None:
    """A 100x outlier among 31 like samples moves the factor by under a fifth (log means)."""
    steady = taught([(EMBED, 100.0), (CHAT, 400.0)] * 16)
    before = service_factor(steady, CHAT)
    after = service_factor(observe(steady, CHAT, 40_000.0), CHAT)
    assert before < after < before * 1.2


def test_the_least_recently_sampled_model_makes_room_for_a_new_one() -> None:
    """At MAX_MODELS models per agent, a new model replaces the one sampled longest ago."""
    stats = taught([(f"m{n}", 100.0) for n in range(MAX_MODELS)])
    stats = observe(stats, "m0", 100.0)  # m0 is now the most recent, m1 the oldest
    stats = observe(stats, "new", 100.0)
    names = [name for name, *_ in stats.model_latency]
    assert len(names) == MAX_MODELS
    assert "m1" not in names
    assert "m0" in names
    assert names[-1] == "new"


async def test_a_chat_request_skips_a_cpu_host_that_is_fast_only_at_embeddings() -> None:
    """A CPU host quick at embeddings but slow at chat takes no chat request beside a busy GPU.

    The 2-slot CPU host has completed 80 ms embeddings and a few 4 s chat requests; the
    4-slot GPU serves chat in 300 ms. With the GPU holding ten requests (six queued, so
    0.3 + 7 / 13.3 = 0.83 s expected), the idle CPU host looks quicker by its capacity
    alone (a mean service time of 0.7 s); a chat request's own 4 s there makes it slower.
    """
    clock = FakeClock()
    lb = balancer(clock)
    gpu = agent("gpu", vram_gb=24, gpu="nvidia", models=(CHAT,))
    cpu = agent("cpu", models=(CHAT, EMBED), parallel_slots=2)
    await lb.register(gpu)
    await lb.register(cpu)

    async def serve(model: str, ms: int, on: tuple[Agent, ...] = ()) -> None:
        selection = await lb.select(Task(model=model), candidates=on, acquire=True)
        clock.advance(ms / 1000)
        await lb.end(selection.agent.id, ms, request_id=selection.request_id)

    for _ in range(24):
        await serve(EMBED, 80)  # only the CPU host serves embeddings
    for _ in range(TRUST_SAMPLES):
        await serve(CHAT, 4000, on=(cpu,))
        await serve(CHAT, 300, on=(gpu,))
    for _ in range(10):
        assert (await lb.select(Task(model=CHAT), acquire=True)).agent.id == "gpu"
    without_model = await lb.select(Task(), candidates=(gpu, cpu))
    assert without_model.agent.id == "cpu"  # by capacity alone the idle CPU host is quicker

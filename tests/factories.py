"""Builders shared by the tests: agents, a controllable clock, a balancer over a memory store."""

from __future__ import annotations

import random
from collections.abc import Sequence

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.model import Agent, Hardware
from lb_service.store.feedback import Feedback
from lb_service.store.memory import MemoryStore

#: A fixed start time (unix ms) so timestamps in assertions are exact.
START_MS = 1_700_000_000_000


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now_ms += round(seconds * 1000)


def agent(
    agent_id: str,
    *,
    vram_gb: float = 0.0,
    gpu: str = "",
    models: Sequence[str] = ("llama3:8b",),
    max_connections: int = 0,
    parallel_slots: int = 0,
    cpu_cores: int = 8,
    host: str = "",
    port: int = 11434,
) -> Agent:
    """An agent with sensible defaults: CPU-only, serving llama3:8b, no connection limit."""
    return Agent(
        id=agent_id,
        host=host or f"{agent_id}.local",
        port=port,
        models=tuple(models),
        hardware=Hardware(gpu=gpu, vram_gb=vram_gb, cpu_cores=cpu_cores, ram_gb=32.0),
        max_connections=max_connections,
        parallel_slots=parallel_slots,
    )


#: The default rules for folding request ends into an agent's figures.
FEEDBACK = Feedback()

#: Power of two choices and peak-EWMA off: picks follow the five base rules exactly.
BASE_RULES = BalancerConfig(choice_count=0, peak_ewma=False, pick_hold_s=0)


def balancer(
    clock: FakeClock | None = None,
    config: BalancerConfig | None = None,
    seed: int = 7,
    store: MemoryStore | None = None,
) -> LoadBalancer:
    """A balancer over a fresh memory store with a fake clock and a seeded random source.

    Unless a config is given it runs the base rules (full scan, moving-average latency),
    whose pick orders are exact; tests of the sampled and peak-EWMA defaults say so.
    """
    return LoadBalancer(
        store or MemoryStore(epoch="test"),
        config or BASE_RULES,
        clock=clock or FakeClock(),
        rng=random.Random(seed),
    )

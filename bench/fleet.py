"""The agents and tasks every benchmark part uses, so their figures describe the same fleet."""

from __future__ import annotations

import random

from lb_service.balancer import LoadBalancer
from lb_service.model import Agent, Hardware, Task

#: The model every agent serves.
COMMON_MODEL = "llama3:8b"
#: The model one agent in ten serves: the "model requirement" tasks ask for it.
RARE_MODEL = "llama3:70b"
#: GPU sizes dealt round the fleet (0: CPU-only), so VRAM-aware strategies have choices.
VRAM_GB = (0.0, 16.0, 24.0, 48.0, 80.0)

#: No requirement: every agent is eligible.
ANY_TASK = Task()
#: A model requirement that a tenth of the agents meet.
MODEL_TASK = Task(model=RARE_MODEL)


def fleet(size: int) -> list[Agent]:
    """``size`` agents: mixed GPUs, all serving COMMON_MODEL, every tenth also RARE_MODEL."""
    agents = []
    for n in range(size):
        vram = VRAM_GB[n % len(VRAM_GB)]
        models = (COMMON_MODEL, RARE_MODEL) if n % 10 == 0 else (COMMON_MODEL,)
        agents.append(
            Agent(
                id=f"agent-{n:05d}",
                host=f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                port=11434,
                models=models,
                hardware=Hardware(
                    gpu="A100" if vram else "", vram_gb=vram, cpu_cores=16, ram_gb=128.0
                ),
                metadata={"zone": f"zone-{n % 3}"},
            )
        )
    return agents


async def load_fleet(balancer: LoadBalancer, size: int, seed: int = 1) -> list[Agent]:
    """Register a fleet and give it a working-day load: open leases and measured latencies.

    About half the agents hold 1-3 open requests and every agent has reported a latency,
    so least-connections, latency-based and capability-match rank real, uneven figures.
    """
    rng = random.Random(seed)
    agents = fleet(size)
    for agent in agents:
        await balancer.register(agent)
    for agent in agents:
        request_id = await balancer.start(agent.id)
        await balancer.end(agent.id, rng.uniform(50.0, 2000.0), request_id)
        for _ in range(rng.choice((0, 0, 1, 2, 3))):
            await balancer.start(agent.id)
    return agents

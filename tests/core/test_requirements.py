"""Task requirements filter agents under every strategy, and refusals name the requirement."""

from __future__ import annotations

import pytest

from lb_service.balancer import LoadBalancer
from lb_service.errors import NoEligibleAgent
from lb_service.model import Agent, Compute, StrategyName, Task
from lb_service.requirements import eligible, meets
from tests.factories import agent

CPU = agent("cpu", models=("llama3:8b",))
SMALL = agent("small", vram_gb=16, gpu="T4", models=("llama3:8b",))
BIG = agent("big", vram_gb=80, gpu="A100", models=("llama3:8b", "llama3:70b"))
NAMED_GPU = agent("named", gpu="RTX-4090", models=("llama3:8b",))  # GPU named, VRAM unknown
ALL = (CPU, SMALL, BIG, NAMED_GPU)


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (Task(), ["cpu", "small", "big", "named"]),
        (Task(model="llama3:70b"), ["big"]),
        (Task(model="llama3"), []),  # exact match only, no prefix matching
        (Task(min_vram_gb=16), ["small", "big"]),
        (Task(min_vram_gb=16.5), ["big"]),
        (Task(compute=Compute.GPU), ["small", "big", "named"]),
        (Task(compute=Compute.CPU), ["cpu"]),
        (Task(model="llama3:8b", compute=Compute.GPU, min_vram_gb=20), ["big"]),
    ],
)
def test_requirements_filter(task: Task, expected: list[str]) -> None:
    """Model is an exact match, VRAM a minimum, GPU needs VRAM or a named GPU, CPU excludes GPUs."""
    assert [a.id for a in ALL if meets(a, task)] == expected


@pytest.mark.parametrize(
    ("agents", "task", "message"),
    [
        (ALL, Task(model="llama3:405b"), "no agent serves model 'llama3:405b'"),
        ((CPU,), Task(compute=Compute.GPU), "no agent has a GPU"),
        ((BIG,), Task(model="llama3:70b", compute=Compute.CPU), "no agent serving model "),
        ((SMALL, BIG), Task(compute=Compute.CPU), "no agent is CPU-only"),
        (
            ALL,
            Task(model="llama3:70b", min_vram_gb=100),
            "no agent serving model 'llama3:70b' has at least 100 GB of VRAM "
            "(the most among them is 80 GB)",
        ),
    ],
)
def test_refusal_names_the_requirement(agents: tuple[Agent, ...], task: Task, message: str) -> None:
    """When nothing qualifies, the error names the first requirement that excluded everyone."""
    with pytest.raises(
        NoEligibleAgent, match="^" + message.replace("(", r"\(").replace(")", r"\)")
    ):
        eligible(agents, task)


@pytest.mark.parametrize("strategy", list(StrategyName))
async def test_every_strategy_respects_requirements(
    lb: LoadBalancer, strategy: StrategyName
) -> None:
    """Whatever the strategy, twenty picks for a 70B model all land on the one agent serving it."""
    for a in ALL:
        await lb.register(a)
    await lb.set_strategy(strategy)
    picks = {(await lb.select(Task(model="llama3:70b"))).agent.id for _ in range(20)}
    assert picks == {"big"}


async def test_capacity_is_a_filter_too(lb: LoadBalancer) -> None:
    """An agent at max_connections is skipped while others have room."""
    await lb.register(agent("full", max_connections=1))
    await lb.register(agent("free"))
    await lb.start("full")
    assert {(await lb.select()).agent.id for _ in range(5)} == {"free"}

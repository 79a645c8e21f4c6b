"""Task requirements as filters: which agents may take a task, and why none can."""

from __future__ import annotations

from collections.abc import Collection

from lb_service.errors import NoEligibleAgent
from lb_service.model import Agent, Compute, Task


def meets(agent: Agent, task: Task) -> bool:
    """Whether the agent satisfies every requirement of the task."""
    hardware = agent.hardware
    return (
        (not task.model or task.model in agent.models)
        and (task.compute is not Compute.GPU or hardware.has_gpu)
        and (task.compute is not Compute.CPU or not hardware.has_gpu)
        and hardware.vram_gb >= task.min_vram_gb
    )


def eligible(agents: Collection[Agent], task: Task) -> list[Agent]:
    """Return the agents that meet the task, in their given order.

    Raises NoEligibleAgent naming the first requirement that excluded every agent, so
    the caller reads ``no agent serves model 'llama3:70b'`` rather than a bare refusal.
    """
    matching = [agent for agent in agents if meets(agent, task)]
    if matching or not agents:
        return matching
    raise NoEligibleAgent(_explain(agents, task))


def _explain(agents: Collection[Agent], task: Task) -> str:
    # Apply the filters one at a time, in the order a person reads the task, and name
    # the first that leaves nothing; the subject grows with the filters already passed.
    pool = list(agents)
    subject = "agent"
    if task.model:
        pool = [a for a in pool if task.model in a.models]
        if not pool:
            return f"no agent serves model {task.model!r}"
        subject = f"agent serving model {task.model!r}"
    if task.compute is Compute.GPU:
        pool = [a for a in pool if a.hardware.has_gpu]
        if not pool:
            return f"no {subject} has a GPU"
    elif task.compute is Compute.CPU:
        pool = [a for a in pool if not a.hardware.has_gpu]
        if not pool:
            return f"no {subject} is CPU-only"
    largest = max(a.hardware.vram_gb for a in pool)
    return (
        f"no {subject} has at least {task.min_vram_gb:g} GB of VRAM "
        f"(the most among them is {largest:g} GB)"
    )

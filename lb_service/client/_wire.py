"""Requests built from the client's keyword arguments; messages convert in ``service.convert``."""

from __future__ import annotations

from collections.abc import Sequence

from lb.v1 import load_balancer_pb2 as pb

from lb_service.model import Agent, Compute, Task
from lb_service.service import convert


def select_request(
    task: Task | None,
    *,
    model: str,
    min_vram_gb: float,
    compute: Compute,
    session_id: str,
    candidates: Sequence[Agent],
    acquire: bool,
) -> pb.SelectAgentRequest:
    """Build a SelectAgent request from a task or from its fields given one by one."""
    if task is None:
        task = Task(model=model, min_vram_gb=min_vram_gb, compute=compute)
    elif (model, min_vram_gb, compute) != ("", 0.0, Compute.ANY):
        raise TypeError("give either task or model/min_vram_gb/compute, not both")
    return pb.SelectAgentRequest(
        task=convert.task_to_pb(task),
        session_id=session_id,
        candidates=[convert.agent_to_pb(agent) for agent in candidates],
        acquire=acquire,
    )

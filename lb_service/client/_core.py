"""The core both clients share: requests built from a method's arguments, responses read back."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from lb.v1 import load_balancer_pb2 as pb

from lb_service.client import _wire
from lb_service.client._errors import ClientError
from lb_service.model import Agent, Compute, Selection, SelectionRequest, Task

#: Status codes by number, to read the code of a failed SelectAgents entry.
_CODES = {code.value[0]: code for code in grpc.StatusCode}


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
        task=_wire.task_to_pb(task),
        session_id=session_id,
        candidates=[_wire.agent_to_pb(agent) for agent in candidates],
        acquire=acquire,
    )


def select_many_request(requests: Sequence[SelectionRequest]) -> pb.SelectAgentsRequest:
    """Build a SelectAgents request: one entry per pick, in order."""
    return pb.SelectAgentsRequest(requests=[_wire.selection_request_to_pb(r) for r in requests])


def selection_results(response: pb.SelectAgentsResponse) -> list[Selection | ClientError]:
    """Read a SelectAgents response: a Selection, or the ClientError SelectAgent would raise."""
    outcomes: list[Selection | ClientError] = []
    for result in response.results:
        if result.HasField("selection"):
            outcomes.append(_wire.selection_from_pb(result.selection))
        else:
            error = result.error
            code = _CODES.get(error.code, grpc.StatusCode.UNKNOWN)
            outcomes.append(ClientError(code, error.message, error.reason))
    return outcomes

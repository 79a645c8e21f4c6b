"""The server's side of lb.v1 message conversion: the Agent message cache and SelectAgents results.

The conversions both sides share live in ``lb_service.client._wire``; they are re-exported
here so the servicer reads every conversion from one name.
"""

from __future__ import annotations

from collections.abc import Iterable

from lb.v1 import load_balancer_pb2 as pb

from lb_service.client._wire import (
    agent_from_pb,
    agent_to_pb,
    compute_from_pb,
    load_from_pb,
    load_to_pb,
    report_from_pb,
    report_to_pb,
    selection_from_pb,
    selection_request_to_pb,
    selection_to_pb,
    snapshot_from_pb,
    snapshot_to_pb,
    statistics_from_pb,
    statistics_to_pb,
    strategy_from_pb,
    strategy_to_pb,
    task_from_pb,
    task_to_pb,
    write_selection,
)
from lb_service.errors import LoadBalancerError
from lb_service.model import Agent, Selection
from lb_service.service.status import code_for, reason_for

__all__ = [
    "MAX_ERROR_RESULT_BYTES",
    "AgentMessages",
    "agent_from_pb",
    "agent_to_pb",
    "compute_from_pb",
    "load_from_pb",
    "load_to_pb",
    "report_from_pb",
    "report_to_pb",
    "selection_from_pb",
    "selection_request_to_pb",
    "selection_results_to_pb",
    "selection_to_pb",
    "snapshot_from_pb",
    "snapshot_to_pb",
    "statistics_from_pb",
    "statistics_to_pb",
    "strategy_from_pb",
    "strategy_to_pb",
    "task_from_pb",
    "task_to_pb",
    "write_selection",
]


class AgentMessages:
    """The Agent messages of agents converted lately, reused while the agent is the same object.

    A registered agent is one immutable object until it is registered again, and it is
    picked over and over: building its message (metadata map and all) anew for every
    pick was the largest cost of answering SelectAgent. Candidates passed with a request
    are new objects every time, so they always miss; at most ``limit`` are kept.
    """

    def __init__(self, limit: int = 10_000) -> None:
        """Keep at most ``limit`` messages (the registry's size is a good limit)."""
        self._limit = limit
        self._messages: dict[str, tuple[Agent, pb.Agent]] = {}

    def get(self, agent: Agent) -> pb.Agent:
        """The message for ``agent``: reused if this very object was converted before."""
        cached = self._messages.get(agent.id)
        if cached is not None and cached[0] is agent:
            return cached[1]
        if len(self._messages) >= self._limit:
            self._messages.clear()
        message = agent_to_pb(agent)
        self._messages[agent.id] = (agent, message)
        return message


#: Characters of an error message a SelectAgents entry carries (messages are short; one
#: quoting a long id is cut), so that an error result has a known most size.
_MAX_ERROR_MESSAGE = 512
#: The most bytes one failed entry adds to a SelectAgents answer (UTF-8, with its fields).
MAX_ERROR_RESULT_BYTES = 4 * _MAX_ERROR_MESSAGE + 128


def selection_results_to_pb(
    outcomes: Iterable[Selection | LoadBalancerError], agents: AgentMessages | None = None
) -> pb.SelectAgentsResponse:
    """Build the SelectAgents response: per pick, the selection or the status it failed with.

    A failed pick carries the code, message and reason SelectAgent would have returned.
    """
    response = pb.SelectAgentsResponse()
    for outcome in outcomes:
        result = response.results.add()
        if isinstance(outcome, Selection):
            agent = agents.get(outcome.agent) if agents is not None else None
            write_selection(result.selection, outcome, agent)
        else:
            result.error.code = code_for(outcome).value[0]
            result.error.message = str(outcome)[:_MAX_ERROR_MESSAGE]
            result.error.reason = reason_for(outcome)
    return response

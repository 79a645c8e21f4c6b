"""SelectAgents through grpc_testing: one result per entry, each as SelectAgent would answer it."""

from __future__ import annotations

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb

from lb_service.service.servicer import MAX_BATCH_SELECTIONS
from tests.factories import START_MS
from tests.service.harness import Harness, assert_rejected
from tests.service.test_servicer import REJECTIONS, Rejection, agent_pb, load_pb

_SELECTS = {name: case for name, case in REJECTIONS.items() if case.method == "SelectAgent"}


def select_many(harness: Harness, *requests: pb.SelectAgentRequest) -> list[pb.SelectAgentResult]:
    """SelectAgents that must succeed as a call; its results in order."""
    response = harness.ok("SelectAgents", pb.SelectAgentsRequest(requests=requests))
    return list(response.results)


def test_results_come_in_request_order_as_select_agent_answers(harness: Harness) -> None:
    """Each entry's result is the response SelectAgent would give, taking its turn in order."""
    harness.register(agent_pb("a"), agent_pb("b", models=("llama3:70b",)))

    results = select_many(
        harness,
        pb.SelectAgentRequest(),
        pb.SelectAgentRequest(task=pb.TaskRequirements(model="llama3:70b"), acquire=True),
        pb.SelectAgentRequest(),
    )

    assert [r.WhichOneof("result") for r in results] == ["selection"] * 3
    assert results[0].selection == pb.SelectAgentResponse(
        agent=agent_pb("a"), strategy=pb.STRATEGY_LEAST_CONNECTIONS
    )
    assert results[1].selection == pb.SelectAgentResponse(
        agent=agent_pb("b", models=("llama3:70b",)),
        request_id="test-1",
        strategy=pb.STRATEGY_LEAST_CONNECTIONS,
    )
    # b now holds the lease the second entry opened, so the third goes to a.
    assert results[2].selection.agent.id == "a"
    assert harness.loads("b") == [
        load_pb("b", active=1, total=1, last_request_at_ms=START_MS, weight=1.0)
    ]


def test_an_empty_batch_answers_no_results(harness: Harness) -> None:
    """SelectAgents with no entries succeeds with no results."""
    assert select_many(harness) == []


@pytest.mark.parametrize("case", _SELECTS.values(), ids=list(_SELECTS))
def test_a_failed_entry_carries_what_select_agent_would_fail_with(
    harness: Harness, case: Rejection
) -> None:
    """A refused entry holds SelectAgent's code, message and reason; the call itself succeeds."""
    case.setup(harness)

    assert isinstance(case.request, pb.SelectAgentRequest)  # _SELECTS holds SelectAgent's
    (result,) = select_many(harness, case.request)

    assert result.WhichOneof("result") == "error"
    assert result.error == pb.SelectAgentError(
        code=case.code.value[0], message=case.details, reason=case.reason
    )


def test_entries_succeed_and_fail_on_their_own(harness: Harness) -> None:
    """A failing entry between two good ones fails alone; the good ones are committed."""
    harness.register(agent_pb("a"))

    results = select_many(
        harness,
        pb.SelectAgentRequest(acquire=True),
        pb.SelectAgentRequest(task=pb.TaskRequirements(compute=pb.Compute.ValueType(7))),
        pb.SelectAgentRequest(task=pb.TaskRequirements(model="llama3:70b")),
        pb.SelectAgentRequest(acquire=True),
    )

    assert [r.WhichOneof("result") for r in results] == ["selection", "error", "error", "selection"]
    assert (results[1].error.code, results[1].error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT.value[0],
        "INVALID_ARGUMENT",
    )
    assert results[2].error.reason == "NO_ELIGIBLE_AGENT"
    assert [results[0].selection.request_id, results[3].selection.request_id] == [
        "test-1",
        "test-2",
    ]
    statistics = harness.statistics()
    assert (statistics.total_selections, statistics.failed_selections) == (2, 1)


def test_more_entries_than_allowed_fail_the_call_and_change_nothing(harness: Harness) -> None:
    """Over MAX_BATCH_SELECTIONS entries, the whole call is INVALID_ARGUMENT and no pick is made."""
    harness.register(agent_pb("a"))
    requests = [pb.SelectAgentRequest(acquire=True)] * (MAX_BATCH_SELECTIONS + 1)

    result = harness.unary("SelectAgents", pb.SelectAgentsRequest(requests=requests))

    assert_rejected(
        result.trailing_metadata,
        result.code,
        result.details,
        expected_code=grpc.StatusCode.INVALID_ARGUMENT,
        expected_details=f"at most {MAX_BATCH_SELECTIONS} selections may be asked for per "
        f"call, got {MAX_BATCH_SELECTIONS + 1}; split the batch",
        reason="INVALID_ARGUMENT",
    )
    assert harness.statistics().total_selections == 0


def test_a_full_batch_is_accepted(harness: Harness) -> None:
    """Exactly MAX_BATCH_SELECTIONS entries are served, one result each."""
    harness.register(agent_pb("a"), agent_pb("b"))
    requests = [pb.SelectAgentRequest()] * MAX_BATCH_SELECTIONS

    results = select_many(harness, *requests)

    assert len(results) == MAX_BATCH_SELECTIONS
    assert {r.selection.agent.id for r in results} == {"a", "b"}


def test_a_re_registered_agent_is_answered_as_registered_now(harness: Harness) -> None:
    """After a re-register the answer carries the new fields, not a remembered message."""
    harness.register(agent_pb("a"))
    assert select_many(harness, pb.SelectAgentRequest())[0].selection.agent.port == 11434

    harness.register(agent_pb("a", port=8080))

    assert select_many(harness, pb.SelectAgentRequest())[0].selection.agent.port == 8080

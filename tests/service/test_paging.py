"""ListAgents and GetLoads a page at a time: tokens, the last page, refusals that change nothing."""

from __future__ import annotations

import grpc
from lb.v1 import load_balancer_pb2 as pb

from tests.service.harness import Harness
from tests.service.test_servicer import agent_pb

IDS = [f"a{n}" for n in range(5)]


def _fleet(harness: Harness) -> None:
    harness.register(*(agent_pb(agent_id) for agent_id in IDS))


def test_list_agents_pages_through_every_agent_in_registration_order(harness: Harness) -> None:
    """page_size 2 gives pages of 2, 2 and 1 agents, the last with an empty next_page_token."""
    _fleet(harness)
    pages, token = [], ""
    while True:
        response = harness.ok("ListAgents", pb.ListAgentsRequest(page_size=2, page_token=token))
        pages.append([agent.id for agent in response.agents])
        token = response.next_page_token
        if not token:
            break
    assert pages == [["a0", "a1"], ["a2", "a3"], ["a4"]]


def test_without_a_page_size_everything_comes_at_once(harness: Harness) -> None:
    """A request without page_size is answered as before paging: every agent, no token."""
    _fleet(harness)
    response = harness.ok("ListAgents", pb.ListAgentsRequest())
    assert ([a.id for a in response.agents], response.next_page_token) == (IDS, "")
    loads = harness.ok("GetLoads", pb.GetLoadsRequest())
    assert ([load.agent_id for load in loads.loads], loads.next_page_token) == (IDS, "")


def test_get_loads_pages_keep_the_requested_order(harness: Harness) -> None:
    """GetLoads with agent_ids pages through those agents in the order asked."""
    _fleet(harness)
    ids = ["a4", "a0", "a2"]
    first = harness.ok("GetLoads", pb.GetLoadsRequest(agent_ids=ids, page_size=2))
    assert [load.agent_id for load in first.loads] == ["a4", "a0"]
    second = harness.ok(
        "GetLoads",
        pb.GetLoadsRequest(agent_ids=ids, page_size=2, page_token=first.next_page_token),
    )
    assert ([load.agent_id for load in second.loads], second.next_page_token) == (["a2"], "")


def test_a_get_loads_token_with_other_agent_ids_is_invalid(harness: Harness) -> None:
    """A token continues only the request it came from: other agent_ids is INVALID_ARGUMENT."""
    _fleet(harness)
    token = harness.ok("GetLoads", pb.GetLoadsRequest(page_size=2)).next_page_token
    result = harness.unary("GetLoads", pb.GetLoadsRequest(agent_ids=["a1"], page_token=token))
    assert result.code is grpc.StatusCode.INVALID_ARGUMENT
    assert "issued for a different request" in result.details


def test_bad_paging_input_is_invalid_and_changes_nothing(harness: Harness) -> None:
    """A negative page_size or a forged token is INVALID_ARGUMENT naming it; state is unchanged."""
    _fleet(harness)
    before = harness.state()
    for method, request, field in [
        ("ListAgents", pb.ListAgentsRequest(page_size=-1), "page_size"),
        ("ListAgents", pb.ListAgentsRequest(page_token="forged"), "page_token"),
        ("GetLoads", pb.GetLoadsRequest(page_size=-5), "page_size"),
        ("GetLoads", pb.GetLoadsRequest(page_token="forged"), "page_token"),
    ]:
        result = harness.unary(method, request)
        assert (result.code, result.details.split()[0]) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            field,
        )
    assert harness.state() == before

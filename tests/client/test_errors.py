"""ClientError: one exception with the status code, the server's message and ErrorInfo reason."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from lb_service.client import ClientError, LoadBalancerClient, RetryPolicy
from lb_service.model import Agent
from tests.client.fakes import ScriptedServer


def test_failed_precondition_select(client: LoadBalancerClient) -> None:
    """A select no agent can serve raises ClientError with code, message, reason and str()."""
    client.register(Agent("a", host="10.0.0.1", port=11434, models=("llama3:8b",)))
    with pytest.raises(ClientError) as caught:
        client.select(model="x")
    error = caught.value
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.message == "no agent serves model 'x'"
    assert error.reason == "NO_ELIGIBLE_AGENT"
    assert str(error) == "FAILED_PRECONDITION: no agent serves model 'x'"


def test_not_found_deregister(client: LoadBalancerClient) -> None:
    """Removing an unknown agent raises ClientError NOT_FOUND with reason AGENT_NOT_FOUND."""
    with pytest.raises(ClientError) as caught:
        client.deregister("ghost")
    assert (caught.value.code, caught.value.message, caught.value.reason) == (
        grpc.StatusCode.NOT_FOUND,
        "unknown agent 'ghost'",
        "AGENT_NOT_FOUND",
    )


def test_invalid_argument_keeps_the_servers_message(client: LoadBalancerClient) -> None:
    """A malformed agent is INVALID_ARGUMENT, and nothing is registered."""
    with pytest.raises(ClientError) as caught:
        client.register(Agent("a", host="10.0.0.1", port=70000))
    assert (caught.value.code, caught.value.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert "65535" in caught.value.message
    assert client.agents() == []


def test_reason_is_empty_without_error_info(scripted: ScriptedServer) -> None:
    """A status without a google.rpc.ErrorInfo detail gives reason ""."""
    scripted.servicer.failures = [grpc.StatusCode.INTERNAL]
    with LoadBalancerClient(scripted.target) as client, pytest.raises(ClientError) as caught:
        client.statistics()
    assert (caught.value.code, caught.value.message, caught.value.reason) == (
        grpc.StatusCode.INTERNAL,
        "scripted INTERNAL",
        "",
    )


@pytest.mark.parametrize(("domain", "reason"), [("lb.v1", "SCRIPTED"), ("example.com", "")])
def test_reason_only_from_the_lb_domain(scripted: ScriptedServer, domain: str, reason: str) -> None:
    """The reason is read from an ErrorInfo in the lb.v1 domain and ignored from any other."""
    scripted.servicer.failures = [grpc.StatusCode.ABORTED]
    scripted.servicer.info = error_details_pb2.ErrorInfo(reason="SCRIPTED", domain=domain)
    with LoadBalancerClient(scripted.target) as client, pytest.raises(ClientError) as caught:
        client.statistics()
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.ABORTED, reason)


def test_connection_failure_is_a_client_error(dead_target: str) -> None:
    """Connection failures are ClientError too: UNAVAILABLE with no reason, repr names all three."""
    client = LoadBalancerClient(dead_target, retry=RetryPolicy(attempts=1))
    with client, pytest.raises(ClientError) as caught:
        client.agents()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.reason == ""
    assert repr(caught.value).startswith("ClientError(UNAVAILABLE, ")


@pytest.mark.parametrize(
    "raw",
    [b"\xff not a status", status_pb2.Status(code=code_pb2.NOT_FOUND).SerializeToString()],
    ids=["undecodable", "contradicting"],
)
def test_details_that_do_not_fit_give_no_reason(scripted: ScriptedServer, raw: bytes) -> None:
    """Status details that do not parse, or contradict the status, give reason "" and no crash."""
    scripted.servicer.failures = [grpc.StatusCode.ABORTED]
    scripted.servicer.raw_details = raw
    with LoadBalancerClient(scripted.target) as client, pytest.raises(ClientError) as caught:
        client.statistics()
    assert (caught.value.code, caught.value.message, caught.value.reason) == (
        grpc.StatusCode.ABORTED,
        "scripted ABORTED",
        "",
    )

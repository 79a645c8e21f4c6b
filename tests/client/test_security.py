"""TLS, mutual TLS and bearer tokens, against real servers that require them."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from lb_service.client import AsyncLoadBalancerClient, ClientError, LoadBalancerClient, RetryPolicy
from lb_service.model import Agent
from lb_service.service.options import ServerOptions, TlsFiles
from tests.certs import Pki
from tests.client.fakes import Recorder
from tests.client.serving import ThreadServer

#: Refusals are not worth retrying in these tests; one attempt keeps them quick.
ONCE = RetryPolicy(attempts=1)


def _serving(options: ServerOptions) -> Iterator[ThreadServer]:
    running = ThreadServer(options).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[ThreadServer]:
    """A server with a certificate for 127.0.0.1 signed by the test CA."""
    yield from _serving(ServerOptions(tls=TlsFiles(pki.server.cert_path, pki.server.key_path)))


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[ThreadServer]:
    """A server that also requires a client certificate signed by the test CA."""
    tls = TlsFiles(pki.server.cert_path, pki.server.key_path, client_ca=pki.ca.cert_path)
    yield from _serving(ServerOptions(tls=tls))


@pytest.fixture
def token_server() -> Iterator[ThreadServer]:
    """A server whose admin RPCs need the bearer token "s3cret"."""
    yield from _serving(ServerOptions(admin_token="s3cret"))


def test_tls_with_the_servers_ca(tls_server: ThreadServer, pki: Pki) -> None:
    """root_certificates=the CA verifies the server, and calls work."""
    with LoadBalancerClient(tls_server.target, root_certificates=pki.ca.cert) as client:
        client.register(Agent("a", host="10.0.0.1", port=11434))
        assert [agent.id for agent in client.agents()] == ["a"]


def test_tls_rejects_an_unknown_server(tls_server: ThreadServer) -> None:
    """With the system roots only, the test CA's server is not trusted: UNAVAILABLE."""
    client = LoadBalancerClient(tls_server.target, tls=True, retry=ONCE)
    with client, pytest.raises(ClientError) as caught:
        client.agents()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_with_a_client_certificate(mtls_server: ThreadServer, pki: Pki) -> None:
    """A client certificate from the trusted CA is accepted."""
    with LoadBalancerClient(
        mtls_server.target,
        root_certificates=pki.ca.cert,
        certificate_chain=pki.client.cert,
        private_key=pki.client.key,
    ) as client:
        assert client.agents() == []


@pytest.mark.parametrize("with_rogue_certificate", [False, True])
def test_mutual_tls_refuses_other_clients(
    mtls_server: ThreadServer, pki: Pki, with_rogue_certificate: bool
) -> None:
    """No client certificate, or one from another CA, fails UNAVAILABLE."""
    pair = pki.rogue_client if with_rogue_certificate else None
    with (
        LoadBalancerClient(
            mtls_server.target,
            root_certificates=pki.ca.cert,
            certificate_chain=pair.cert if pair else None,
            private_key=pair.key if pair else None,
            retry=ONCE,
        ) as client,
        pytest.raises(ClientError) as caught,
    ):
        client.agents()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


async def test_async_client_over_mutual_tls(mtls_server: ThreadServer, pki: Pki) -> None:
    """The asyncio client takes the same TLS options."""
    async with AsyncLoadBalancerClient(
        mtls_server.target,
        root_certificates=pki.ca.cert,
        certificate_chain=pki.client.cert,
        private_key=pki.client.key,
    ) as client:
        await client.register(Agent("a", host="10.0.0.1", port=11434))
        assert [agent.id for agent in await client.agents()] == ["a"]


def test_half_a_client_pair_is_rejected(pki: Pki) -> None:
    """A certificate chain without its key (or the reverse) is a ValueError, not a downgrade."""
    with pytest.raises(ValueError, match="both"):
        LoadBalancerClient(certificate_chain=pki.client.cert)
    with pytest.raises(ValueError, match="both"):
        LoadBalancerClient(private_key=pki.client.key)


def test_token_is_sent_on_every_call(token_server: ThreadServer) -> None:
    """With token=, admin calls succeed and every call carries 'authorization: Bearer <token>'."""
    recorder = Recorder()
    with LoadBalancerClient(token_server.target, token="s3cret", interceptors=[recorder]) as client:
        client.register(Agent("a", host="10.0.0.1", port=11434))
        client.agents()
    assert [seen.metadata for seen in recorder.seen] == [(("authorization", "Bearer s3cret"),)] * 2


def test_missing_token_is_unauthenticated(token_server: ThreadServer) -> None:
    """Without a token an admin call fails UNAUTHENTICATED, and nothing is registered."""
    with LoadBalancerClient(token_server.target) as client:
        with pytest.raises(ClientError) as caught:
            client.register(Agent("a", host="10.0.0.1", port=11434))
        assert client.agents() == []
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_token_is_permission_denied(token_server: ThreadServer) -> None:
    """A wrong token fails PERMISSION_DENIED."""
    client = LoadBalancerClient(token_server.target, token="guess")
    with client, pytest.raises(ClientError) as caught:
        client.register(Agent("a", host="10.0.0.1", port=11434))
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED


async def test_async_client_sends_the_token(token_server: ThreadServer) -> None:
    """The asyncio client authenticates with token= the same way."""
    async with AsyncLoadBalancerClient(token_server.target, token="s3cret") as client:
        await client.register(Agent("a", host="10.0.0.1", port=11434))
    async with AsyncLoadBalancerClient(token_server.target) as client:
        with pytest.raises(ClientError) as caught:
            await client.register(Agent("b", host="10.0.0.1", port=11434))
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("token", ["", " padded ", "line\nbreak", "naïve"])
def test_unusable_tokens_are_rejected(token: str) -> None:
    """A token grpc could not send as metadata is a ValueError up front, not on every call."""
    with pytest.raises(ValueError, match="token"):
        LoadBalancerClient(token=token)

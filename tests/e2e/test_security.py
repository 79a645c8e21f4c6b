"""TLS, mutual TLS and bearer-token authorization, over real handshakes on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import LoadBalancer
from lb_service.service.options import ServerOptions, TlsFiles
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore
from tests.certs import Pki

TOKEN = "s3cret-token"
AGENT = pb.Agent(id="a", host="a.local", port=11434)


async def _serving(options: ServerOptions) -> LoadBalancerServer:
    server = LoadBalancerServer(LoadBalancer(MemoryStore()), options)
    await server.start()
    return server


@pytest.fixture
async def tls_server(pki: Pki) -> AsyncIterator[LoadBalancerServer]:
    """A server speaking TLS with the test PKI's server certificate."""
    tls = TlsFiles(pki.server.cert_path, pki.server.key_path)
    server = await _serving(ServerOptions(listen="127.0.0.1:0", tls=tls))
    yield server
    await server.stop(0)


@pytest.fixture
async def mtls_server(pki: Pki) -> AsyncIterator[LoadBalancerServer]:
    """A server that requires client certificates signed by the test CA."""
    tls = TlsFiles(pki.server.cert_path, pki.server.key_path, client_ca=pki.ca.cert_path)
    server = await _serving(ServerOptions(listen="127.0.0.1:0", tls=tls))
    yield server
    await server.stop(0)


async def _list(channel: grpc.aio.Channel, **call: object) -> list[str]:
    reply = await pb_grpc.LoadBalancerStub(channel).ListAgents(
        pb.ListAgentsRequest(), timeout=5, **call
    )
    return [a.id for a in reply.agents]


async def test_tls_handshake_serves(tls_server: LoadBalancerServer, pki: Pki) -> None:
    """A client trusting the CA completes the TLS handshake and gets answers."""
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert)
    async with grpc.aio.secure_channel(f"localhost:{tls_server.port}", credentials) as channel:
        assert await _list(channel) == []


async def test_plaintext_client_cannot_talk_to_tls(tls_server: LoadBalancerServer) -> None:
    """A plaintext client gets UNAVAILABLE from a TLS server, never an answer."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tls_server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _list(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("client", "accepted"), [("client", True), ("rogue_client", False), (None, False)]
)
async def test_mutual_tls_needs_a_certificate_from_the_ca(
    mtls_server: LoadBalancerServer, pki: Pki, client: str | None, accepted: bool
) -> None:
    """Only clients presenting a certificate signed by the configured CA are served."""
    pair = getattr(pki, client) if client else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert,
        private_key=pair.key if pair else None,
        certificate_chain=pair.cert if pair else None,
    )
    async with grpc.aio.secure_channel(f"localhost:{mtls_server.port}", credentials) as channel:
        if accepted:
            assert await _list(channel) == []
        else:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.fixture
async def token_server() -> AsyncIterator[LoadBalancerServer]:
    """A plaintext server whose admin RPCs need the bearer token."""
    server = await _serving(ServerOptions(listen="127.0.0.1:0", admin_token=TOKEN))
    yield server
    await server.stop(0)


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED),
        ((("authorization", TOKEN),), grpc.StatusCode.PERMISSION_DENIED),  # no "Bearer "
    ],
)
async def test_admin_rpcs_refuse_without_the_token(
    token_server: LoadBalancerServer, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    """Missing token is UNAUTHENTICATED, a wrong one PERMISSION_DENIED, and nothing changes."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        for call, request in (
            (stub.RegisterAgent, pb.RegisterAgentRequest(agent=AGENT)),
            (stub.SetStrategy, pb.SetStrategyRequest(strategy=pb.STRATEGY_WEIGHTED)),
            (stub.UpdateWeights, pb.UpdateWeightsRequest()),
            (stub.DeregisterAgent, pb.DeregisterAgentRequest(agent_id="a")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request, metadata=metadata, timeout=5)
            assert caught.value.code() == code
        assert await _list(channel) == []  # reads stay open and show nothing changed
        stats = await stub.GetStatistics(pb.GetStatisticsRequest(), timeout=5)
        assert stats.strategy == pb.STRATEGY_LEAST_CONNECTIONS


async def test_admin_rpcs_work_with_the_token(token_server: LoadBalancerServer) -> None:
    """With the right bearer token admin RPCs succeed."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{token_server.port}") as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        auth = (("authorization", f"Bearer {TOKEN}"),)
        await stub.RegisterAgent(pb.RegisterAgentRequest(agent=AGENT), metadata=auth, timeout=5)
        assert await _list(channel) == ["a"]


async def test_auth_all_rpcs_protects_reads_but_not_health() -> None:
    """With every RPC protected, reads and reflection need the token; health checks stay open."""
    server = await _serving(
        ServerOptions(listen="127.0.0.1:0", admin_token=TOKEN, auth_all_rpcs=True)
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _list(channel)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert await _list(channel, metadata=(("authorization", f"Bearer {TOKEN}"),)) == []
            watch = pb_grpc.LoadBalancerStub(channel).WatchLoads(pb.WatchLoadsRequest())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await watch.read()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in reflection.ServerReflectionInfo(iter([request])):
                    pass
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    ("listen", "tls", "token", "warnings"),
    [
        ("127.0.0.1:50051", False, False, 0),
        ("localhost:50051", False, False, 0),
        ("[::1]:50051", False, False, 0),
        ("0.0.0.0:50051", False, False, 2),
        ("0.0.0.0:50051", True, False, 1),
        ("10.1.2.3:50051", True, True, 0),
    ],
)
def test_exposure_warnings(listen: str, tls: bool, token: bool, warnings: int) -> None:
    """Binding beyond loopback warns once for plaintext and once for open admin RPCs."""
    options = ServerOptions(
        listen=listen,
        tls=TlsFiles(Path("c"), Path("k")) if tls else None,
        admin_token="t" if token else None,
    )
    assert len(options.exposure_warnings()) == warnings

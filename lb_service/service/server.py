"""The gRPC server: LoadBalancer, health and reflection services, upkeep, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import LoadBalancer
from lb_service.service.auth import TokenAuthInterceptor
from lb_service.service.metrics import Metrics
from lb_service.service.observe import ObservingInterceptor
from lb_service.service.servicer import LoadBalancerServicer

log = structlog.get_logger(__name__)

#: Full name of the LoadBalancer service, as health checks and reflection know it.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["LoadBalancer"].full_name


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files for TLS; with ``client_ca`` set, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials for these files."""
        client_ca = self.client_ca.read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Process-level options of the server, with the documented defaults."""

    #: Address to bind; loopback by default so nothing is exposed by accident.
    listen: str = "127.0.0.1:50051"
    #: Seconds in-flight RPCs get to finish on shutdown.
    grace_s: float = 5.0
    #: Seconds between sweeps that expire overdue leases and idle sessions.
    sweep_interval_s: float = 1.0
    #: Serve TLS (and mutual TLS) with these files; plaintext when None.
    tls: TlsFiles | None = None
    #: Bearer token admin RPCs require; no token means no authorization.
    admin_token: str | None = field(default=None, repr=False)
    #: Require the token on every lb.v1 RPC, not only the admin ones.
    auth_all_rpcs: bool = False
    #: Export Prometheus metrics over HTTP on this HOST:PORT; off when empty.
    metrics_listen: str = ""

    def exposure_warnings(self) -> list[str]:
        """What is unsafe about serving beyond loopback with these options."""
        host = self.listen.rpartition(":")[0].strip("[]")
        if host in {"localhost", "127.0.0.1", "::1"} or host.startswith("127."):
            return []
        warnings = []
        if self.tls is None:
            warnings.append("serving plaintext beyond loopback: set --tls-cert and --tls-key")
        if self.admin_token is None:
            warnings.append("admin RPCs are open to anyone who can connect: set --admin-token-file")
        return warnings


def _ignore(method: str, code: grpc.StatusCode, seconds: float) -> None:
    """Record nothing (metrics are off)."""


class ListenError(RuntimeError):
    """The server could not bind its listen address."""


class LoadBalancerServer:
    """A running lb.v1 server; start it, then stop it (tests and the CLI share this)."""

    def __init__(
        self,
        balancer: LoadBalancer,
        options: ServerOptions | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """Prepare a server for ``balancer``; nothing listens until ``start``.

        With ``metrics`` (which should also be the balancer's observer), RPCs are counted
        and /metrics is exported on ``options.metrics_listen``.
        """
        self._balancer = balancer
        self._options = options or ServerOptions()
        self._servicer = LoadBalancerServicer(balancer)
        self._health = health.aio.HealthServicer()
        self.metrics = metrics
        self.metrics_port = 0
        # Outermost first: every RPC is timed, counted and tagged in the logs, refused
        # (unauthenticated) ones included.
        interceptors: list[grpc.aio.ServerInterceptor] = [
            ObservingInterceptor(metrics.record_rpc if metrics else _ignore)
        ]
        if self._options.admin_token is not None:
            interceptors.append(
                TokenAuthInterceptor(self._options.admin_token, self._options.auth_all_rpcs)
            )
        # gRPC turns SO_REUSEPORT on by default, which lets a second server silently share
        # the port (and split the traffic and the state). A taken port must be an error.
        self._server = grpc.aio.server(
            interceptors=interceptors, options=[("grpc.so_reuseport", 0)]
        )
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        """Bind, start serving, mark the services SERVING; return the bound port."""
        server = self._server
        pb_grpc.add_LoadBalancerServicer_to_server(self._servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        tls = self._options.tls
        try:
            if tls is None:
                self.port = server.add_insecure_port(self._options.listen)
            else:
                self.port = server.add_secure_port(self._options.listen, tls.credentials())
        except RuntimeError as error:
            raise ListenError(
                f"cannot listen on {self._options.listen}: the address is invalid or in use"
            ) from error
        await server.start()
        if self.metrics is not None and self._options.metrics_listen:
            await self.metrics.refresh(self._balancer)
            self.metrics_port = self.metrics.serve_http(self._options.metrics_listen)
            log.info("metrics_serving", listen=self._options.metrics_listen, port=self.metrics_port)
        for service in ("", SERVICE_NAME):
            await self._health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._sweeper = asyncio.create_task(self._sweep_forever())
        for warning in self._options.exposure_warnings():
            log.warning("exposed", problem=warning)
        log.info("serving", listen=self._options.listen, port=self.port, tls=tls is not None)
        return self.port

    async def stop(self, grace_s: float | None = None) -> None:
        """Stop gracefully: report NOT_SERVING, end streams, let in-flight RPCs finish."""
        grace = self._options.grace_s if grace_s is None else grace_s
        await self._health.enter_graceful_shutdown()
        self._servicer.begin_shutdown()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self._server.stop(grace)
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self._server.wait_for_termination()

    async def _sweep_forever(self) -> None:
        # Leases of crashed dispatchers and idle sessions are expired here, off the
        # request path, so selections never pay for housekeeping.
        while True:
            await asyncio.sleep(self._options.sweep_interval_s)
            leases, _ = await self._balancer.sweep()
            if leases:
                log.warning("leases_expired", count=leases)
            if self.metrics is not None:
                await self.metrics.refresh(self._balancer)


async def serve(
    balancer: LoadBalancer,
    options: ServerOptions,
    metrics: Metrics | None = None,
    on_reload: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully; SIGHUP calls ``on_reload``."""
    server = LoadBalancerServer(balancer, options, metrics)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()
    if on_reload is not None:
        reload = on_reload

        def start_reload() -> None:
            task = loop.create_task(reload())
            reloads.add(task)  # keep a reference until it finishes
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, start_reload)
    await stop.wait()
    log.info("shutting_down", grace_s=options.grace_s)
    await server.stop()

"""The gRPC server: LoadBalancer, health and reflection services, upkeep, graceful stop.

Agent health (``lb_service.health``) runs beside upkeep in its own task: the probe
scheduler probes engine agents with the prober ``probe_factory`` builds (none: agents
are not probed, heartbeats are still checked) and stops before the server does.

Upkeep (expiring leases and sessions, refreshing metrics, saving the state file,
checking a shared store) runs in one background task, off the request path. While a
shared store does not answer, health reports NOT_SERVING and upkeep keeps trying; both
recover by themselves when it answers again. Stopping drains first: new RPCs are
refused with UNAVAILABLE, WatchLoads streams end with OK, in-flight RPCs finish within
the grace period; then grpc stops, and the state file is written one last time.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import LoadBalancer
from lb_service.errors import StoreUnavailable
from lb_service.health.result import ProbeResult
from lb_service.health.scheduler import ProbeFactory, Prober, ProbeScheduler
from lb_service.model import Agent, StrategyName
from lb_service.service.auth import TokenAuth
from lb_service.service.draining import Drain
from lb_service.service.handlers import Step
from lb_service.service.limits import raise_open_file_limit
from lb_service.service.malformed import refusing_malformed, request_types
from lb_service.service.metrics import Metrics
from lb_service.service.observe import observing, record_nothing
from lb_service.service.options import ListenError, ServerOptions
from lb_service.service.reflection import enable_reflection
from lb_service.service.servicer import LoadBalancerServicer
from lb_service.service.stack import ServiceStack
from lb_service.store.roles import Store
from lb_service.store.snapshot import StateFile

log = structlog.get_logger(__name__)

#: Full name of the LoadBalancer service, as health checks and reflection know it.
SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["LoadBalancer"].full_name
#: While draining, how long no new call must arrive before grpc is stopped.
DRAIN_QUIET_S = 0.1


class LoadBalancerServer:
    """A running lb.v1 server; start it, then stop it (tests and the CLI share this)."""

    def __init__(
        self,
        balancer: LoadBalancer,
        options: ServerOptions | None = None,
        metrics: Metrics | None = None,
        state: StateFile | None = None,
        store: Store | None = None,
        probe_factory: ProbeFactory | None = None,
    ) -> None:
        """Prepare a server for ``balancer``; nothing listens until ``start``.

        With ``probe_factory`` (``lambda timeout_s: Prober(timeout_s=timeout_s)``),
        agents with an engine are probed every ``probe_interval_s``; without, they are
        not (heartbeats and drains work either way).

        With ``metrics`` (which should also be the balancer's observer), RPCs are counted
        and /metrics is exported on ``options.metrics_listen``. With ``state`` (already
        restored by the caller), the store is saved every ``options.state_interval_s``
        and once more after the server has stopped. With ``store`` (the balancer's), it
        is checked every ``options.store_check_interval_s`` and health follows it.
        """
        self._balancer = balancer
        self._options = options or ServerOptions()
        self._state = state
        self._store = store
        #: Whether the store answered the last check (health is SERVING only then).
        self.store_available = True
        self._servicer = LoadBalancerServicer(balancer)
        self._health = health.aio.HealthServicer()
        self.metrics = metrics
        self.metrics_port = 0
        self._drain = Drain()
        # gRPC turns SO_REUSEPORT on by default, which lets a second server silently share
        # the port (and split the traffic and the state). A taken port must be an error.
        # No interceptors: the stack's steps are applied to each method at registration.
        self._server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", self._options.max_message_bytes),
            ],
        )
        self._stack = ServiceStack(self._server, self._steps(metrics))
        self._upkeep: asyncio.Task[None] | None = None
        self.port = 0
        config = balancer.config
        self._prober: Prober | None = (
            probe_factory(config.probe_timeout_s) if probe_factory is not None else None
        )
        self.probes = ProbeScheduler(
            balancer.health,
            self._probe_with(self._prober) if self._prober is not None else None,
            interval_s=config.probe_interval_s,
            timeout_s=config.probe_timeout_s,
            tick_s=self._options.sweep_interval_s,
            # The prober bounds each probe by the same timeout (health.probes).
            self_bounded=True,
        )

    def _steps(self, metrics: Metrics | None) -> list[Step]:
        """The server stack's steps, outermost first."""
        # Every RPC is timed, counted and tagged in the logs, refused (unauthenticated,
        # draining) ones included.
        steps = [observing(metrics.recorder if metrics else record_nothing), self._drain.step]
        if self._options.admin_token is not None:
            auth = TokenAuth(self._options.admin_token, self._options.auth_all_rpcs)
            steps.append(auth.step)
        # Innermost: a request that does not parse is refused as INVALID_ARGUMENT (after
        # authorization, so an unauthenticated caller learns nothing about parsing).
        steps.append(
            refusing_malformed(request_types(pb.DESCRIPTOR.services_by_name["LoadBalancer"]))
        )
        return steps

    @staticmethod
    def _probe_with(prober: Prober) -> Callable[[Agent, bool], Awaitable[ProbeResult]]:
        async def probe(agent: Agent, full: bool) -> ProbeResult:
            return await prober.probe(agent, full=full)

        return probe

    def add_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]
    ) -> None:
        """Serve another service's methods (name -> handler) behind the stack; before ``start``.

        They are registered as lb.v1's are. The benchmarks serve their empty "floor" RPC
        this way, so it pays exactly the server stack that lb.v1's RPCs pay.
        """
        self._stack.add_registered_method_handlers(service, handlers)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """Serve more methods on the same server, behind the same stack; before ``start``."""
        self._stack.add_generic_rpc_handlers(handlers)

    async def start(self) -> int:
        """Bind, start serving, mark the services SERVING; return the bound port."""
        server, stack = self._server, self._stack
        # Through the stack: each method is decorated once, here, not on every call.
        pb_grpc.add_LoadBalancerServicer_to_server(self._servicer, stack)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, stack)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), stack)
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
            with contextlib.suppress(StoreUnavailable):  # refreshed again at every sweep
                await self.metrics.refresh(self._balancer)
            # Scrapes read the per-agent gauges on this loop, so they are never stale.
            self.metrics.attach(self._balancer, asyncio.get_running_loop())
            self.metrics_port = self.metrics.serve_http(self._options.metrics_listen)
            log.info("metrics_serving", listen=self._options.metrics_listen, port=self.metrics_port)
        await self._check_store()
        if self.store_available:
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._upkeep = asyncio.create_task(self._upkeep_forever())
        self.probes.start()
        for warning in self._options.exposure_warnings():
            log.warning("exposed", problem=warning)
        log.info("serving", listen=self._options.listen, port=self.port, tls=tls is not None)
        return self.port

    async def stop(self, grace_period_s: float | None = None) -> None:
        """Stop gracefully: report NOT_SERVING, drain, end streams, let in-flight RPCs finish."""
        grace = self._options.grace_period_s if grace_period_s is None else grace_period_s
        started = asyncio.get_running_loop().time()
        await self._health.enter_graceful_shutdown()
        self._drain.begin()
        self._servicer.begin_shutdown()
        if self._upkeep is not None:
            self._upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upkeep
        await self.probes.stop()
        if self._prober is not None:
            await self._prober.aclose()
        drained = await self._drain.drained(DRAIN_QUIET_S, grace)
        remaining = max(0.0, grace - (asyncio.get_running_loop().time() - started))
        await self._server.stop(remaining)
        if self.metrics is not None:
            self.metrics.detach()  # the loop may close: scrapes serve the last loads
        # After the last RPC: the file holds every change the server acknowledged.
        await self._save_state()
        log.info("stopped", drained=drained)

    async def wait_for_termination(self) -> None:
        """Return once the server has stopped."""
        await self._server.wait_for_termination()

    @property
    def draining(self) -> bool:
        """Whether shutdown has begun: new lb.v1 calls are being refused with UNAVAILABLE."""
        return self._drain.draining

    def activity(self) -> dict[str, int]:
        """Open WatchLoads streams and asyncio tasks now: cheap evidence that nothing leaks."""
        return {
            "open_streams": self._servicer.open_streams,
            "tasks": len(asyncio.all_tasks()),
        }

    async def _upkeep_forever(self) -> None:
        # Leases of crashed dispatchers and idle sessions are expired, the state saved
        # and the store checked here, off the request path, so selections never pay for
        # housekeeping. A store that does not answer fails a step, never the loop.
        loop = asyncio.get_running_loop()
        sweep_every = self._options.sweep_interval_s
        save_every = self._options.state_interval_s if self._state is not None else math.inf
        check_every = self._options.store_check_interval_s if self._store else math.inf
        next_sweep, next_save = loop.time() + sweep_every, loop.time() + save_every
        next_check = loop.time() + check_every
        while True:
            await asyncio.sleep(max(0.0, min(next_sweep, next_save, next_check) - loop.time()))
            now = loop.time()
            if now >= next_check:
                next_check = now + check_every
                await self._check_store()
            if now >= next_sweep:
                next_sweep = now + sweep_every
                # While the store is known to be away, a sweep could only fail again.
                if self.store_available:
                    await self._sweep()
            if now >= next_save:
                next_save = now + save_every
                await self._save_state()

    async def _check_store(self) -> None:
        """Ask the store whether it answers; on a change, switch health and log it once."""
        if self._store is None:
            return
        try:
            await self._store.check()
        except StoreUnavailable as error:
            if self.store_available:
                self.store_available = False
                await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
                log.error("store_unavailable", error=str(error))
            # Every failed check: a stream opened since the last one ends too.
            self._servicer.store_unavailable(error)
            return
        if not self.store_available:
            self.store_available = True
            self._servicer.store_recovered()
            await self._set_health(health_pb2.HealthCheckResponse.SERVING)
            log.info("store_recovered")

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        # Once shutdown has begun the health servicer ignores this: it stays NOT_SERVING.
        for service in ("", SERVICE_NAME):
            await self._health.set(service, status)

    async def _sweep(self) -> None:
        try:
            leases, _ = await self._balancer.sweep()
            if leases:
                log.warning("leases_expired", count=leases)
            if self.metrics is not None:
                await self.metrics.refresh(self._balancer)
        except StoreUnavailable as error:
            # The store went away since the last check; the next check reports it.
            log.warning("sweep_failed", error=str(error))

    async def _save_state(self) -> None:
        if self._state is None:
            return
        try:
            await self._state.save()
        except (OSError, StoreUnavailable) as error:
            # A full disk or a lost directory must not stop the balancer: say so and
            # try again at the next interval.
            log.error("state_save_failed", state_file=str(self._state.path), error=str(error))


async def restore_state(
    state: StateFile, balancer: LoadBalancer, strategy: StrategyName | None = None
) -> None:
    """Restore the state file into the store and log what came back or what was wrong.

    A file that cannot be restored is set aside and reported; the server then starts
    empty rather than not at all. ``strategy``, when given, is applied after the restore
    (an explicitly configured strategy wins over the remembered one).
    """
    restored = state.restore()
    if restored.problem:
        log.error(
            "state_file_unusable",
            state_file=str(state.path),
            problem=restored.problem,
            set_aside=str(restored.set_aside or ""),
        )
    elif restored.state is not None:
        log.info(
            "state_restored",
            state_file=str(state.path),
            agents=len(restored.state.agents),
            weights=len(restored.state.weights),
            sessions=len(restored.state.bindings),
            strategy=restored.state.strategy.value,
        )
    if strategy is not None:
        await balancer.set_strategy(strategy)


async def serve(
    balancer: LoadBalancer,
    options: ServerOptions,
    metrics: Metrics | None = None,
    on_reload: Callable[[], Coroutine[Any, Any, None]] | None = None,
    state: StateFile | None = None,
    store: Store | None = None,
    probe_factory: ProbeFactory | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully; SIGHUP calls ``on_reload``.

    With ``store`` (the balancer's), health follows whether it answers. With
    ``probe_factory``, engine agents are probed (see ``LoadBalancerServer``).
    """
    # Probes keep a socket open per agent: a fleet of a thousand passes the usual 1,024.
    raise_open_file_limit()
    server = LoadBalancerServer(balancer, options, metrics, state, store, probe_factory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers go in before the server starts (and logs "serving"), so a signal sent as
    # soon as the server is reachable is never lost to the default action.
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
    await server.start()
    await stop.wait()
    # What is running as shutdown starts: a soak run reads these to find leaks.
    log.info("shutting_down", grace_period_s=options.grace_period_s, **server.activity())
    await server.stop()

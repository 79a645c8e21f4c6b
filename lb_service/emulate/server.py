"""Serving emulated agents: one HTTP listener per agent, and an admin listener for faults.

Each agent has its own aiohttp application on its own socket, so a ``dead`` agent is one
whose listening socket is closed (connections are refused) and ``ok`` opens it again on
the same port. ``hung`` and ``failing`` are a middleware in front of every route: a hung
agent reads the request and never answers (until its fault changes), a failing one
answers 500. The admin listener (``GET /emulator/agents``,
``POST /emulator/agents/{id}/fault``) changes faults while the emulator runs.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from lb_service.emulate import ollama, vllm
from lb_service.emulate.host import Host
from lb_service.emulate.spec import EmulatedAgent, EmulatorSpec, Fault, parse_fault
from lb_service.model import Agent, Engine
from lb_service.simulate.document import ScenarioError

__all__ = ["Emulator"]

_HOST = web.AppKey("host", Host)
_EMULATOR: web.AppKey[Emulator] = web.AppKey("emulator")
#: Seconds a closing listener lets in-flight requests finish: a dead agent cuts them.
_CUT_S = 0.05
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _faults(request: web.Request, handler: _Handler) -> web.StreamResponse:
    host = request.app[_HOST]
    await host.answering.wait()  # set unless the agent is hung
    if host.fault.kind == "failing":
        return web.json_response({"error": "emulated failure"}, status=500)
    return await handler(request)


class _Listener:
    """One agent's socket and application; closed while the agent is dead."""

    def __init__(self, host: Host, address: str, port: int) -> None:
        self.host = host
        self.address = address
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def is_open(self) -> bool:
        return self._runner is not None

    def reserve(self) -> None:
        """Pick the port now (for an agent that starts dead) without listening on it."""
        if not self.port:
            with _bound(self.address, 0) as sock:
                self.port = sock.getsockname()[1]

    async def open(self) -> None:
        if self._runner is not None:
            return
        sock = _bound(self.address, self.port)
        self.port = sock.getsockname()[1]
        app = web.Application(middlewares=[_faults])
        app[_HOST] = self.host
        routes = ollama.add_routes if self.host.spec.engine is Engine.OLLAMA else vllm.add_routes
        routes(app, self.host)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=_CUT_S)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


class Emulator:
    """Serves every agent of an emulator file on ``address`` until ``stop``."""

    def __init__(
        self,
        spec: EmulatorSpec,
        *,
        address: str = "127.0.0.1",
        time_scale: float = 1.0,
        seed: int | None = None,
        admin_port: int = 0,
    ) -> None:
        """Prepare the agents; ``seed`` overrides the file's, ``time_scale`` scales every delay."""
        self.address = address
        self.admin_port = admin_port
        base = spec.seed if seed is None else seed
        self._listeners = {
            agent.id: _Listener(
                # One generator per agent, seeded by agent: adding an agent changes no
                # other agent's draws.
                Host(agent, spec.service, random.Random(f"{base}:{agent.id}"), time_scale),
                address,
                agent.port,
            )
            for agent in spec.agents
        }
        self._admin: web.AppRunner | None = None

    async def start(self) -> None:
        """Open every agent's port (a dead one only reserves its number) and the admin port."""
        try:
            for listener in self._listeners.values():
                if listener.host.fault.kind == "dead":
                    listener.reserve()
                else:
                    await listener.open()
            await self._start_admin()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close every port; requests in flight are cut."""
        for listener in self._listeners.values():
            listener.host.set_fault(Fault())  # releases hung requests so they end
            await listener.close()
            listener.host.close()
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.cleanup()

    def agents(self) -> list[Agent]:
        """The agents served, as lb-service registers them (address, ports, slots)."""
        found = []
        for listener in self._listeners.values():
            sim = listener.host.spec.sim
            agent = sim.agent
            found.append(
                Agent(
                    id=agent.id,
                    host=self.address,
                    port=listener.port,
                    models=agent.models,
                    hardware=agent.hardware,
                    engine=listener.host.spec.engine,
                    max_connections=agent.max_connections,
                    parallel_slots=sim.slots,
                )
            )
        return found

    def spec_of(self, agent_id: str) -> EmulatedAgent:
        """The emulated agent ``agent_id`` (KeyError if there is none)."""
        return self._listeners[agent_id].host.spec

    async def set_fault(self, agent_id: str, fault: Fault) -> None:
        """Give ``agent_id`` this fault now: ``dead`` closes its port, any other reopens it."""
        listener = self._listeners[agent_id]
        listener.host.set_fault(fault)
        if fault.kind == "dead":
            await listener.close()
        else:
            await listener.open()

    def status(self) -> list[dict[str, Any]]:
        """Each agent's port, fault and load, as the admin endpoint lists them."""
        return [_status(listener) for listener in self._listeners.values()]

    async def _start_admin(self) -> None:
        app = web.Application()
        app[_EMULATOR] = self
        app.router.add_get("/emulator/agents", _list_agents)
        app.router.add_post("/emulator/agents/{agent_id}/fault", _change_fault)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=_CUT_S)
        await runner.setup()
        sock = _bound(self.address, self.admin_port)
        self.admin_port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._admin = runner


async def _list_agents(request: web.Request) -> web.Response:
    return web.json_response({"agents": request.app[_EMULATOR].status()})


async def _change_fault(request: web.Request) -> web.Response:
    emulator = request.app[_EMULATOR]
    agent_id = request.match_info["agent_id"]
    try:
        emulator.spec_of(agent_id)
        fault = parse_fault(await request.json())
    except KeyError:
        return web.json_response({"error": f"no agent {agent_id!r}"}, status=404)
    except (ValueError, ScenarioError) as error:  # ScenarioError: a bad field
        return web.json_response({"error": str(error)}, status=400)
    try:
        await emulator.set_fault(agent_id, fault)
    except OSError as error:
        # Its port was taken while it was dead: it stays dead, and the caller is told.
        await emulator.set_fault(agent_id, Fault("dead"))
        return web.json_response({"error": f"cannot reopen its port: {error}"}, status=409)
    found = next(s for s in emulator.status() if s["id"] == agent_id)
    return web.json_response(found)


def _status(listener: _Listener) -> dict[str, Any]:
    host = listener.host
    return {
        "id": host.spec.id,
        "engine": host.spec.engine.value,
        "port": listener.port,
        "listening": listener.is_open,
        "fault": host.fault.kind,
        "slow_factor": host.fault.factor,
        "running": sum(host.running.values()),
        "waiting": sum(host.waiting.values()),
        "loaded_models": host.loaded_models,
        "model_loads": host.loads,
        "model_evictions": host.evictions,
        "model_load_s": host.load_s,
    }


def _bound(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Reopening a dead agent's port must not wait out TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock

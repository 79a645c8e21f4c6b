"""What an emulated agent does with requests, whatever its engine: slots, queue, loads, time.

A request takes one of the agent's ``slots`` (Ollama's ``OLLAMA_NUM_PARALLEL``, vLLM's
``max_num_seqs``) or waits for one; more than ``max_queue`` waiting are refused (Ollama's
``OLLAMA_MAX_QUEUE``). A model that is not loaded is loaded first, in ``load_ms``,
evicting the least recently used one when ``max_loaded_models`` are loaded. Its service
time is drawn from the model's lognormal, clamped to its 1st-99th percentiles (so one draw
never stalls a test), divided by the agent's speed, multiplied by a ``slow`` fault's factor
and by the time scale. The slots are the agent's, shared by its models (Ollama gives each
loaded model its own; one pool keeps the emulated capacity what the file says).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from lb_service.emulate.spec import EmulatedAgent, Fault
from lb_service.model import Engine
from lb_service.simulate.scenario import ServiceTime

#: The z-score of the 99th percentile: draws are clamped to [p1, p99].
_Z99 = 2.3263478740408408


class Busy(Exception):
    """The agent's queue is full: the request is refused (Ollama answers 503)."""


@dataclass(frozen=True, slots=True)
class Work:
    """A request that holds a slot: how long it waited to load its model, how long to serve."""

    load_s: float
    service_s: float


class Host:
    """One emulated agent's state: its fault, slots, queue, loaded models and random draws."""

    def __init__(
        self,
        spec: EmulatedAgent,
        service: Mapping[str, ServiceTime],
        rng: random.Random,
        time_scale: float = 1.0,
    ) -> None:
        """Serve ``spec`` with the ``service`` times drawn from ``rng``, times ``time_scale``."""
        self.spec = spec
        self.fault = spec.fault
        self._service = service
        self._rng = rng
        self._scale = time_scale
        self._slots = asyncio.Semaphore(spec.sim.slots)
        #: Requests in service and waiting for a slot, by model.
        self.running: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()
        #: Loaded models, least recently used first.
        self._loaded: OrderedDict[str, None] = self._at_start()
        self._loading: dict[str, asyncio.Task[None]] = {}
        #: Model loads finished, models evicted to make room, and time spent loading (s,
        #: emulated): what a swapping fleet costs, shown on the admin endpoint.
        self.loads = 0
        self.evictions = 0
        self.load_s = 0.0
        #: Set while the agent is not hung; hung requests wait on it.
        self.answering = asyncio.Event()
        self.set_fault(spec.fault)

    @property
    def loaded_models(self) -> list[str]:
        """The models in memory now, least recently used first."""
        return list(self._loaded)

    def set_fault(self, fault: Fault) -> None:
        """Change what the agent does; a dead agent forgets its loaded models (a restart)."""
        self.fault = fault
        if fault.kind == "hung":
            self.answering.clear()
        else:
            self.answering.set()
        if fault.kind == "dead":
            self._loaded = self._at_start()

    def _at_start(self) -> OrderedDict[str, None]:
        # vLLM loads its models before it serves; Ollama loads each on first use.
        preloaded = self.spec.sim.agent.models if self.spec.engine is Engine.VLLM else ()
        return OrderedDict.fromkeys(preloaded)

    def close(self) -> None:
        """Cancel model loads in progress (the emulator is stopping)."""
        for loading in list(self._loading.values()):
            loading.cancel()

    def serves(self, model: str) -> bool:
        """Whether the agent has ``model``."""
        return model in self.spec.sim.agent.models

    @contextlib.asynccontextmanager
    async def slot(self, model: str, *, bounded: bool = True) -> AsyncIterator[Work]:
        """Hold a slot for a request for ``model`` (loading it first).

        ``bounded``: raise Busy when ``max_queue`` requests already wait (Ollama); vLLM's
        queue has no bound.
        """
        if bounded and sum(self.waiting.values()) >= self.spec.max_queue:
            raise Busy
        self.waiting[model] += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting[model] -= 1
        self.running[model] += 1
        try:
            load_s = await self._ensure_loaded(model)
            yield Work(load_s, self.service_s(model))
        finally:
            self.running[model] -= 1
            self._slots.release()

    def service_s(self, model: str) -> float:
        """One draw of the seconds a request for ``model`` takes here, scaled."""
        time = self._service[model]
        spread = _Z99 * time.sigma
        draw = min(max(self._rng.gauss(time.mu, time.sigma), time.mu - spread), time.mu + spread)
        factor = self.fault.factor if self.fault.kind == "slow" else 1.0
        return math.exp(draw) / 1000 / self.spec.sim.speed * factor * self._scale

    async def _ensure_loaded(self, model: str) -> float:
        if model in self._loaded:
            self._loaded.move_to_end(model)
            return 0.0
        loading = self._loading.get(model)
        if loading is None:
            loading = asyncio.ensure_future(self._load(model))
            self._loading[model] = loading
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Shielded: a request cancelled mid-load must not cancel the load others wait on.
        await asyncio.shield(loading)
        return loop.time() - started

    async def _load(self, model: str) -> None:
        try:
            await asyncio.sleep(self.spec.load_ms / 1000 * self._scale)
            while len(self._loaded) >= self.spec.max_loaded_models:
                self._loaded.popitem(last=False)
                self.evictions += 1
            self._loaded[model] = None
            self.loads += 1
            self.load_s += self.spec.load_ms / 1000
        finally:
            del self._loading[model]

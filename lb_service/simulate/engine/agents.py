"""A simulated agent during a run: its slots, its FIFO queue, and the faults it replays.

Each agent has ``slots`` parallel servers and a FIFO queue beyond them; a request's
response time is its wait plus its service time (its size / the agent's speed, times a
``slow`` fault's factor if service starts during one; ``fail_ms`` and failed if service
starts during a ``fail`` fault). With FIFO and the service time known once the request
is assigned, its start is simply the earliest time a slot is free, so an agent needs no
events of its own: assignment computes start and finish at once. Slots are independent
(running more requests at once does not slow each one down), which flatters agents with
many slots; give fewer slots with a higher speed to model batching that does.

A crash (a ``fail`` fault with ``in_flight: fail``) is the one fault that changes
requests already assigned: ``AgentState.crash`` replays the queue on the freed slots.

With a ``load_ms``, a request for a model the agent does not hold first waits that long
for it to load (in its slot), and the least recently used model is evicted once more
than ``max_loaded_models`` are held (Ollama's ``OLLAMA_MAX_LOADED_MODELS``).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence

from lb_service.simulate.scenario import Fault, SimAgent


class AgentState:
    """One agent's slots, in-system requests and faults during a run."""

    __slots__ = (
        "fails",
        "finishes",
        "free_at",
        "loaded",
        "mean_ms",
        "registered",
        "sim",
        "slows",
    )

    def __init__(self, sim: SimAgent, faults: Sequence[Fault], mean_ms: float) -> None:
        """Idle, with the scenario's faults that concern this agent (times in ms).

        ``mean_ms`` is the mean size, on a speed-1.0 agent, of the requests the agent can
        serve (``workload.mean_size_ms``): what the ``informed`` reference expects each
        request queued there to take.
        """
        self.sim = sim
        self.mean_ms = mean_ms
        # When each slot next becomes free (a heap): a request starts at the earliest.
        self.free_at = [0.0] * sim.slots
        # Finish times of the requests queued or in service (a heap), for in-system counts.
        self.finishes: list[float] = []
        mine = [f for f in faults if f.agent_id == sim.agent.id]
        self.slows = [(f.at_s * 1000, f.until_s * 1000, f.factor) for f in mine if f.kind == "slow"]
        self.fails = [
            (f.at_s * 1000, f.until_s * 1000, f.fail_ms) for f in mine if f.kind == "fail"
        ]
        # An agent with a join fault exists from the start but is registered only then.
        self.registered = not any(f.kind == "join" for f in mine)
        # Models in memory, least recently used first (only with a load time: Ollama
        # loads each on first use, so the agent starts with none).
        self.loaded: OrderedDict[str, None] = OrderedDict()

    def load_wait(self, model: str) -> float:
        """How long a request for ``model`` starting now would wait for the model to load."""
        if self.sim.load_ms <= 0 or not model or model in self.loaded:
            return 0.0
        return self.sim.load_ms

    def use(self, model: str) -> None:
        """A request for ``model`` starts: the model is loaded, the least recently used evicted.

        The queue is first in, first out, so requests start in the order they are
        assigned, and the loaded set moves in that order too.
        """
        if self.sim.load_ms <= 0 or not model:
            return
        self.loaded[model] = None
        self.loaded.move_to_end(model)
        while len(self.loaded) > self.sim.max_loaded_models:
            self.loaded.popitem(last=False)

    def service(self, base_ms: float, start: float) -> tuple[float, bool]:
        """The service time of a request of this size starting at ``start``, and if it fails."""
        for at, until, fail_ms in self.fails:
            if at <= start < until:
                return fail_ms, True
        service = base_ms / self.sim.speed
        for at, until, factor in self.slows:
            if at <= start < until:
                service *= factor
        return service, False

    def in_system(self, now: float) -> int:
        """Requests queued or in service at ``now``."""
        finishes = self.finishes
        while finishes and finishes[0] <= now:
            heapq.heappop(finishes)
        return len(finishes)

    def has_room(self, now: float) -> bool:
        """Whether the agent is under its declared ``max_connections`` (0: no limit)."""
        limit = self.sim.agent.max_connections
        return limit == 0 or self.in_system(now) < limit

    def crash(
        self,
        serving: Sequence[tuple[int, float]],
        queued: Sequence[int],
        now: float,
        fail_ms: float,
    ) -> list[tuple[int, float, float]]:
        """Fail every request in the agent ``fail_ms`` after it can start, from ``now`` on.

        ``serving`` are the requests in service (with their starts, which stand) and
        ``queued`` those waiting, in FIFO order. Each serving request now ends at
        ``now + fail_ms``; the queue is replayed on the freed slots, each request failing
        ``fail_ms`` after its new start. Returns ``(request, start, finish)`` for every
        one of them, serving first, each in the order given: the caller reschedules their
        ends in that order, which fixes how simultaneous events are ordered.
        """
        slots = [now] * (self.sim.slots - len(serving))
        moved: list[tuple[int, float, float]] = []
        for i, start in serving:
            moved.append((i, start, now + fail_ms))
            slots.append(now + fail_ms)
        heapq.heapify(slots)
        for i in queued:
            start = slots[0]
            moved.append((i, start, start + fail_ms))
            heapq.heapreplace(slots, start + fail_ms)
        self.free_at = slots
        # Every request still in the agent is one of those moved: it holds only them now.
        self.finishes = [finish for _, _, finish in moved]
        heapq.heapify(self.finishes)
        return moved

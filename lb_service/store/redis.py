"""The Redis store: one state shared by several lb-service replicas, so they answer as one.

Everything that decides a pick lives in Redis under ``<prefix>:``: the registry, weights
and strategy, every agent's load record, leases, sticky bindings, counters and
ejections. State changes are made by Lua scripts (``redis/lua/``, one file per operation, run
with EVALSHA), each atomic on the server, so concurrent replicas never interleave inside
one: a pick selects and counts in one step, a session binds once, a lease ends once and
a lease expires once however many replicas sweep together.

Every rule is written once, in Python. The scripts keep only what must be atomic:
the bookkeeping of leases (counts and busy time: the few lines of
``feedback.open_lease``/``close_lease``, mirrored in Lua and held equal by the tests),
a compare-and-set write of figures Python computed, and the re-rank of a pick's
contenders, one generic comparison of ranks the strategy computed (``Contender``).

A request end is one step when the replica guessed it right. The replica keeps the
last text of each agent's record it read or wrote; from it, Python folds the end's
estimates before the call (``feedback.fold_end`` on ``close_lease`` of that copy) and
sends them with the end. The script closes the lease and writes them in the same
step only if every input of that fold still holds: the estimate version, the booked
busy time (the only bookkeeping the fold reads), the ejected count, the population,
whether a lease closes, the model of the lease it closes (its figures are learned per
model, ``lb_service.model_cost``), and the last request time. So the figures written
are exactly those the two steps below would write. A guess holds when this replica
made the last change to the record (a pick or start through it, and no end on that
agent through another replica since) and opened the lease it closes, or that lease
names no model (the replica keeps the models of the leases it opened); otherwise the
script books the end and answers as below, and it takes two steps.

Request ends (unless guessed) and expiries take two steps. First a script checks the
end, closes the lease and books it (``end_request``; ``expire_leases`` closes every
overdue lease), atomically, so a lease is closed exactly once however many replicas
race; it returns the agent's record as booked, with the ejected count, population and
lease's model an end's fold needs. Then Python computes the estimates
(``feedback.fold_end``, ``fold_expiry``: latency averages, failures, ejection, learned
capacity, model cost) and writes them back with ``write_estimates``, a compare-and-set
on the record's *estimate version*, which only that write moves: bookkeeping meanwhile
(other leases opening or closing) is kept as it is, while another estimate written
meanwhile is a conflict, answered in the same reply with the record as it is now, from
which Python computes again (at most ``FOLD_ATTEMPTS`` times, then the sample is dropped
with a warning). A write that ejects an agent also checks that the ejected count it was
computed with still holds, so replicas folding at once never eject more than
``max_share``; it records the ejection in the ejections hash in the same step.

Estimates are soft state. If a replica dies (or Redis fails) between the two steps,
the lease is still closed exactly once, its bookkeeping and the latency counters are
exact, and only that one end's estimate is lost: no latency sample, failure or
completion is folded in for it (the busy time it took then counts towards the next
completion, a learned capacity briefly a little low). Later ends correct the figures;
the end itself is reported as done, never retried, so no lease is closed twice. (A
call cancelled between the steps, its client gone, loses its estimate the same way.)

Pending picks (``lb_service.store.pending``) are bookkeeping kept beside the load
records, in keys of their own: per agent the sequence numbers of its pending picks,
oldest first, one sorted set of them all by the end of their hold, and their count per
agent (``AgentStats.pending``), which ``pick_state``, ``stats`` and ``overview`` read
with the records. ``commit_pick`` without acquire adds one and ``open_lease`` confirms
the agent's oldest, after ending those whose hold is over, as ``expire_leases`` does
too: each in the script it already runs, so no round trip is added. The commit's
re-rank counts them with the open leases, as the decision did.

Round trips (counted per RPC by tests/store/test_round_trips.py): each operation is one
script call, and checks its own ids and limits in it (``UnknownAgent``, ``Limit``)
instead of reading first. ``pick_state`` and ``commit_pick`` make a selection two (so
does a refusal: ``pick_state`` then ``record_failed_selection``, or a ``commit_pick``
that finds every contender full and counts the failure itself); ``open_lease`` a request
start one; ``overview`` GetLoads or GetStatistics one; ``set_weights`` UpdateWeights
one. A request end costs one when guessed right, else two (one more per conflict); a
sweep's ``expire_leases`` one, or two when leases expired (one estimate write for all of
them). The registry, weights and strategy are cached in the replica and re-validated in
every script that reads them against a configuration version that every change to them
increments; when it moved, the same reply carries the new configuration, so even a
reload costs no extra round trip.

Change notification: every state change increments ``<prefix>:version`` inside its
script and the replica keeps the highest value it has seen (``version()``). While
anyone waits in ``wait_for_change``, one background task polls that key every
``POLL_INTERVAL_S``, so a WatchLoads stream on any replica sees changes made through
another within a fraction of a second.

Failures: every Redis error becomes ``StoreUnavailable`` naming the server (one place:
``_reaching``). Calls fail fast (connect and read timeouts of ``timeout_ms``, a pool of
``pool_size`` connections waited for at most ``timeout_ms``) and are retried
``retries`` times, with jittered exponential back-off, on connection errors only (a
timed-out script may have run; it is not sent again). Nothing needs restarting when
Redis comes back: connections are re-made, scripts re-loaded on NOSCRIPT, and the
epoch, strategy and version counters re-created by the scripts that need them. Run
Redis with ``maxmemory-policy noeviction``: an evicted key is lost state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from types import MappingProxyType
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import structlog
from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript

from lb_service.capacity import parallel_slots
from lb_service.errors import StoreUnavailable
from lb_service.health.state import HealthRecord
from lb_service.model import Agent, AgentHealth, Engine, Hardware, StrategyName
from lb_service.store.base import (
    AgentStats,
    Binding,
    Committed,
    Configuration,
    Counters,
    EndOutcome,
    EndResult,
    HealthWrite,
    Lease,
    Limit,
    Overview,
    Pick,
    PickState,
    Registered,
    RequestEnd,
    UnknownAgent,
)
from lb_service.store.feedback import (
    Feedback,
    close_lease,
    end_result,
    fold_end,
    fold_expiry,
    is_ejected,
)
from lb_service.store.health import decode_health, encode_health, out_value

log = structlog.get_logger(__name__)

#: How often one replica reads the state version while anyone waits for a change.
POLL_INTERVAL_S = 0.2
#: Estimate writes tried for one end or expiry before its sample is dropped (conflicts).
FOLD_ATTEMPTS = 16
#: The model-cost figures (``lb_service.model_cost``): an estimate that travels as one
#: field of the load record (``mc`` in the scripts; ``_encode_model_cost``).
MODEL_COST = ("model_latency",)
#: AgentStats fields computed in Python and written back by ``write_estimates``, in the
#: order the script reads them (``MODEL_COST`` as one field). ``last_request_at_ms``,
#: which a lease opening sets too, is last: a lease opened between the two steps keeps
#: its time.
ESTIMATES = (
    "avg_latency_ms",
    "cost_ms",
    "cost_at_ms",
    "failed_requests",
    "consecutive_failures",
    "ejected_until_ms",
    "times_ejected",
    "completions",
    "cap_done",
    "cap_busy_ms",
    "cap_mark_ms",
    *MODEL_COST,
    "last_request_at_ms",
)
#: AgentStats fields only the scripts write, atomically with leases and registrations.
BOOKKEEPING = (
    "active",
    "total_requests",
    "joined_ms",
    "busy_total_ms",
    "activity_at_ms",
    "slots",
    # Kept beside the records, not in them (see "Pending picks" in the module docstring).
    "pending",
)
#: Where a script or library declares the libraries it calls (``lua/README.md``).
_USES = "--- uses:"


@functools.cache
def _script_sources() -> dict[str, str]:
    """Each script's source: the libraries it uses, each once and after its own, then its body.

    Read from ``lua/`` beside this module: ``<name>.lua`` is the script ``<name>``,
    ``lua/lib/<library>.lua`` a library.
    """
    folder = resources.files("lb_service.store").joinpath("redis", "lua")
    libraries = {
        entry.name.removesuffix(".lua"): entry.read_text("utf-8")
        for entry in folder.joinpath("lib").iterdir()
        if entry.name.endswith(".lua")
    }
    return {
        entry.name.removesuffix(".lua"): _with_libraries(
            entry.name, entry.read_text("utf-8"), libraries
        )
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


def _uses(source: str) -> list[str]:
    """The libraries a script or library declares (``--- uses: keys, versions``)."""
    return [
        name
        for line in source.splitlines()
        if line.startswith(_USES)
        for name in line.removeprefix(_USES).replace(",", " ").split()
    ]


def _with_libraries(name: str, body: str, libraries: Mapping[str, str]) -> str:
    """``body`` after every library it uses, directly or through another.

    Each library comes after those it uses: a Lua ``local function`` is visible only
    below its definition.
    """
    order: list[str] = []

    def include(library: str, through: tuple[str, ...]) -> None:
        if library in order:
            return
        if library in through:
            raise ValueError(f"{name}: libraries use each other: {' -> '.join(through)}")
        if library not in libraries:
            raise ValueError(f"{name}: no library {library!r} in lua/lib/")
        for used in _uses(libraries[library]):
            include(used, (*through, library))
        order.append(library)

    for library in _uses(body):
        include(library, ())
    return "\n".join([*(libraries[library] for library in order), body])


@dataclass(frozen=True, slots=True)
class _Config:
    """The registry, weights and strategy as of one configuration version."""

    version: str
    strategy: StrategyName
    agents: Mapping[str, Agent]
    #: The registry's ids in registration order, as the scripts list them (load
    #: records in a ``pick_state`` reply come in this order).
    ids: tuple[str, ...]
    weights: Mapping[str, float]


class RedisStore:
    """State shared through Redis by every replica using the same URL and prefix.

    ``start()`` is optional (it checks the server and warms the cache; everything is
    also done lazily on first use). ``close()`` stops the version poller and closes
    the connection pool; call it when the store is no longer used.

    Request ids are ``<epoch>-<n>`` as in the memory store, with ``epoch`` random hex
    created once per prefix in Redis and ``n`` counted there, shared by all replicas.
    ``epoch`` fixes the epoch a prefix gets when this store is the one that creates it
    (tests); otherwise a fresh random one is proposed.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "lb",
        timeout_ms: float = 500.0,
        pool_size: int = 32,
        retries: int = 1,
        strategy: StrategyName = StrategyName.LEAST_CONNECTIONS,
        epoch: str | None = None,
    ) -> None:
        """Connect lazily to ``url`` (redis://, rediss:// or unix://); no I/O happens here.

        ``strategy`` is written to Redis only if the prefix has none yet. Raises
        ValueError for an unusable option or URL.
        """
        if not prefix:
            raise ValueError("prefix must not be empty")
        if not (math.isfinite(timeout_ms) and timeout_ms > 0):
            raise ValueError(f"timeout_ms must be a finite number > 0, got {timeout_ms!r}")
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        timeout_s = timeout_ms / 1000
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            # Waiting for a free connection counts against the same budget as a call.
            timeout=timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            decode_responses=True,
            # RESP2: what every Redis >= 5 speaks, and the reply types the scripts'
            # results are documented in (a Lua false arrives as None).
            protocol=2,
            # Only connection errors are retried: a timed-out script may have run, and
            # running it twice would count a pick or open a lease twice.
            retry=Retry(
                ExponentialWithJitterBackoff(cap=timeout_s, base=min(0.025, timeout_s / 4)),
                retries,
                supported_errors=(redis_errors.ConnectionError,),
            ),
        )
        self._redis = Redis.from_pool(pool)
        #: The server as error messages name it (never with credentials).
        self.where = _describe(pool.connection_kwargs)
        self._prefix = prefix
        self._timeout_ms = timeout_ms
        self._default_strategy = strategy
        self._epoch = epoch
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(source) for name, source in _script_sources().items()
        }
        self._config: _Config | None = None
        # Agent id -> (record text, decoded record) as this replica last read or wrote it:
        # re-used while the text is the same, and what a request end guesses from.
        self._decoded: dict[str, tuple[str, _Record]] = {}
        # The models of the leases this replica opened: what an end guesses its model from.
        self._opened = _OpenedHere()
        # Ejections as the last pick_state read them (and this replica's own since).
        self._ejections: dict[str, int] = {}
        self._version = 0
        self._changed = asyncio.Event()
        self._waiters = 0
        self._poller: asyncio.Task[None] | None = None

    @property
    def prefix(self) -> str:
        """The key prefix: every key this store uses starts with ``<prefix>:``."""
        return self._prefix

    async def start(self) -> None:
        """Check the server answers and load the configuration (optional; see the class)."""
        await self.check()
        await self._current_config()
        raw = await self._call(lambda r: r.get(self._key("version")))
        self._observed(raw)

    async def close(self) -> None:
        """Stop polling for changes and close every connection."""
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        await self._redis.aclose()

    # Registry, weights and strategy.
    async def put_agent(self, agent: Agent, now_ms: int, max_agents: int = 0) -> Registered | Limit:
        """Add or replace an agent, keeping its position, history and weight override.

        An agent not registered until now is stamped ``joined_ms = now_ms`` (slow start).
        A new id when ``max_agents`` (0 = no limit) are registered returns ``Limit.AGENTS``,
        checked in the same script that would add it.
        """
        reply = await self._eval(
            "put_agent",
            [agent.id, _encode_agent(agent), now_ms, parallel_slots(agent), max_agents],
        )
        if isinstance(reply, str):
            return Limit(reply)
        outcome, version = reply
        self._observed(version)
        return Registered(outcome)

    async def delete_agent(self, agent_id: str) -> bool:
        """Remove an agent and its weight override; False if it was not registered."""
        removed, version = await self._eval("delete_agent", [agent_id])
        self._observed(version)
        return bool(removed)

    async def agents(self) -> Mapping[str, Agent]:
        """Registered agents by id, in registration order."""
        return (await self._current_config()).agents

    async def weights(self) -> Mapping[str, float]:
        """Weight overrides by agent id."""
        return (await self._current_config()).weights

    async def set_weights(
        self, weights: Mapping[str, float], *, only_registered: bool = False
    ) -> Configuration | UnknownAgent:
        """Apply all the overrides at once; returns the registry and overrides after it.

        One round trip: the script checks the ids (with ``only_registered``, an id not
        registered changes nothing and is returned as ``UnknownAgent``), applies the
        overrides, and answers with the configuration they leave; when this replica's
        cached copy was current it is updated in place instead of sent again.
        """
        sent = self._config
        args: list[str | int] = [
            sent.version if sent is not None else "",
            self._default_strategy.value,
            int(only_registered),
        ]
        for agent_id, weight in weights.items():
            args += [agent_id, repr(float(weight))]
        reply = await self._eval("set_weights", args)
        if reply[0] == "unknown-agent":
            return UnknownAgent(reply[1])
        config_version, payload, version = reply
        self._observed(version)
        if payload is None and sent is not None and version is not None:
            # The cache was current before this change, which was these overrides alone.
            applied = {agent_id: float(weight) for agent_id, weight in weights.items()}
            config = replace(
                sent, version=config_version, weights=MappingProxyType({**sent.weights, **applied})
            )
            self._cache(config)
        else:
            config = self._adopt(config_version, payload, sent)
        return Configuration(config.agents, config.weights)

    async def clear_weights(self, agent_ids: Iterable[str]) -> None:
        """Drop the overrides of these agents."""
        self._observed(await self._eval("clear_weights", list(agent_ids)))

    async def strategy(self) -> StrategyName:
        """The current strategy."""
        return (await self._current_config()).strategy

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        """Switch strategy; returns the one replaced."""
        previous, version = await self._eval(
            "set_strategy", [strategy.value, self._default_strategy.value]
        )
        self._observed(version)
        return self._strategy_named(previous)

    # Selection.
    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """Snapshot what a selection needs in one round trip (one script).

        ``stats`` holds every registered agent and every candidate with a record.
        """
        sent = self._config
        reply = await self._eval(
            "pick_state",
            [
                sent.version if sent is not None else "",
                self._default_strategy.value,
                session_id,
                *candidate_ids,
            ],
            writes=False,
        )
        (
            config_version,
            payload,
            version,
            sequence,
            session_count,
            lease_count,
            bound,
            used,
            ejections,
            registered,
            candidates,
            out,
            pending,
        ) = reply
        config = self._adopt(config_version, payload, sent)
        self._observed(version)
        stats = self._registered_stats(config.ids, registered)
        if candidate_ids:
            for agent_id, raw in zip(candidate_ids, candidates.split("\n"), strict=True):
                if raw:
                    stats[agent_id] = _decode_record(raw).stats
        _count_pending(stats, _pairs(pending))
        binding = None
        if session_id and bound is not None and used is not None:
            binding = Binding(bound, int(float(used)))
        self._ejections = {ejections[i]: int(ejections[i + 1]) for i in range(0, len(ejections), 2)}
        return PickState(
            strategy=config.strategy,
            agents=config.agents,
            stats=stats,
            weights=config.weights,
            binding=binding,
            sequence=int(sequence),
            session_count=int(session_count),
            lease_count=int(lease_count),
            ejections=MappingProxyType(dict(self._ejections)),
            shared=True,
            out={out[i]: AgentHealth(out[i + 1]) for i in range(0, len(out), 2)} if out else {},
        )

    async def commit_pick(self, pick: Pick) -> Committed | Limit | None:
        """Record a selection atomically, re-ranking ``pick.contenders`` on current loads.

        Each contender ranks ``(tier, max(floor, per_request x (active + 1) + offset))``
        on its requests in flight at commit (``Contender``), lowest first, ties in turn
        by the sequence. Returns None (recording no selection, counting a failed one in
        the same script) when every contender is at max_connections, and a ``Limit``
        (recording nothing) when the pick would open a lease past ``pick.max_leases`` or
        bind a new session past ``pick.max_sessions``.
        A binding of the session made by a concurrent pick (one this replica's snapshot
        did not show) and used since ``pick.fresh_since_ms`` wins over ``pick.bind``: its
        agent is committed and returned with ``sticky=True``.
        Without ``pick.acquire`` the pick is pending on its agent until
        ``pick.hold_until_ms`` (``lb_service.store.pending``).
        """
        seen = pick.seen
        args: list[str | int] = [
            self._epoch_candidate(),
            pick.agent_id,
            pick.now_ms,
            int(pick.acquire),
            pick.session_id,
            int(pick.bind),
            pick.fresh_since_ms,
            seen.agent_id if seen is not None else "",
            seen.last_used_ms if seen is not None else "",
            pick.max_leases,
            pick.max_sessions,
            _quote(pick.model) if pick.acquire else "",
            pick.hold_until_ms,
        ]
        for contender in pick.contenders:
            args += [
                contender.agent_id,
                contender.max_connections,
                repr(float(contender.tier)),
                repr(float(contender.per_request)),
                repr(float(contender.offset)),
                repr(float(contender.floor)),
            ]
        reply = await self._eval("commit_pick", args)
        if reply is None:  # the script counted the failed selection
            return None
        if isinstance(reply, str):
            return Limit(reply)
        agent_id, request_id, sticky, version, record = reply
        self._observed(version)
        if request_id:
            self._opened.add(agent_id, request_id, pick.model)
        self._remember(agent_id, record)
        return Committed(agent_id, request_id, sticky=bool(sticky))

    async def record_failed_selection(self) -> None:
        """Count a selection that found no agent."""
        await self._call(lambda r: r.hincrby(self._key("counters"), "failed", 1), writes=True)

    # Requests and leases.
    async def open_lease(
        self,
        agent_id: str,
        now_ms: int,
        max_leases: int = 0,
        *,
        only_known: bool = False,
        model: str = "",
    ) -> str | Limit | UnknownAgent:
        """Record a request start on the agent, for ``model``; returns the new lease's request_id.

        With ``only_known`` an id neither registered nor holding a load record returns
        ``UnknownAgent``; else with ``max_leases`` (0 = no limit) leases open it returns
        ``Limit.LEASES``; both checked in the same script that would open it.
        """
        reply = await self._eval(
            "open_lease",
            [self._epoch_candidate(), agent_id, now_ms, max_leases, int(only_known), _quote(model)],
        )
        if reply == "unknown-agent":
            return UnknownAgent(agent_id)
        if isinstance(reply, str):
            return Limit(reply)
        request_id, version, record = reply
        self._observed(version)
        self._opened.add(agent_id, request_id, model)
        self._remember(agent_id, record)
        return str(request_id)

    async def end_request(self, end: RequestEnd) -> EndResult:
        """Record a request end (see EndOutcome); changes nothing unless it succeeds.

        One step when this replica's copy of the agent's record is what the end finds
        (it made the last change to it): the estimates ``feedback.fold_end`` computes
        from that copy are sent along and written in the script that closes the lease,
        which checks every input of the fold still holds. Otherwise two steps (see the
        module docstring): the lease is closed and booked, then the estimates computed
        from the booked record are written.
        """
        guess = self._guess_end(end)
        reply = await self._eval(
            "end_request",
            [
                end.request_id,
                end.agent_id,
                repr(float(end.latency_ms)),
                end.now_ms,
                int(end.only_known),
                *(guess[1] if guess is not None else [""]),
            ],
        )
        outcome = EndOutcome(reply[0])
        self._observed(reply[2])
        if len(reply) <= 3:
            return EndResult(outcome, reply[1])
        agent_id, raw, ejected_now, population, written, closed, model = reply[3:10]
        self._opened.discard(agent_id, closed)
        if written is not None and guess is not None:
            # The guess held: its estimates are written, and the reply is the record now.
            self._remember(agent_id, raw)
            guessed = guess[0]
            if guessed.result.ejected_until_ms != guessed.record.ejected_until_ms:
                self._ejections[agent_id] = guessed.result.ejected_until_ms
            return end_result(outcome, agent_id, guessed.record, guessed.result, end.now_ms)
        # The estimate write below moves the record on: this copy would be stale.
        self._decoded.pop(agent_id, None)
        start = _Fold(
            agent_id,
            _end_rule(end, outcome is EndOutcome.CLOSED, unquote(model)),
            _decode_record(raw),
            int(ejected_now),
            int(population),
        )
        if await self._write_estimates(end.now_ms, [start]):
            return EndResult(outcome, reply[1], agent_id=agent_id)  # estimates dropped
        return end_result(outcome, agent_id, start.record, start.result, end.now_ms)

    def _guess_end(self, end: RequestEnd) -> tuple[_Fold, list[str | int]] | None:
        """The fold of ``end`` on this replica's copy of the agent's record, and its arguments.

        Only for a registered agent named in the end, whose record this replica holds:
        it assumes a lease closes when the end names a request or the agent has one
        open, with the model this replica opened that lease for (``_OpenedHere``; none
        if another replica opened it), and the ejected count and population as this
        replica last saw them. The script writes the result only if all of that still holds.
        """
        config, known = self._config, self._decoded.get(end.agent_id)
        if known is None or config is None or end.agent_id not in config.agents:
            return None
        record = known[1]
        closes = bool(end.request_id) or record.stats.active > 0
        booked = close_lease(record.stats, end.now_ms) if closes else record.stats
        model = self._opened.model(end.agent_id, end.request_id) if closes else ""
        ejected_now = sum(until > end.now_ms for until in self._ejections.values())
        fold = _Fold(
            end.agent_id,
            _end_rule(end, closes, model),
            record._replace(stats=booked),
            ejected_now,
            len(config.agents),
        )
        _, estimate_version, fields, eject_until, _ = fold.arguments(end.now_ms)
        return fold, [
            estimate_version,
            repr(float(booked.busy_total_ms)),
            ejected_now,
            len(config.agents),
            int(closes),
            fields,
            eject_until,
            _quote(model),
        ]

    def _remember(self, agent_id: str, raw: str) -> None:
        """Keep a record text a script returned as this replica's copy of the agent's record."""
        known = self._decoded.get(agent_id)
        if known is None or known[0] != raw:
            record = _decode_record(raw)
            self._decoded[agent_id] = (raw, record)
            if not record.stats.active:
                self._opened.idle(agent_id)

    async def expire_leases(
        self, started_before_ms: int, now_ms: int, feedback: Feedback
    ) -> list[Lease]:
        """Close leases started before the cutoff as failed requests; returns them.

        Pending picks whose hold has ended by ``now_ms`` end too, in the first step.

        Each counts as a failed request of its agent, but as lateness, not an agent
        failure: no latency sample, no outlier ejection (``feedback.fold_expiry``). Two
        steps (see the module docstring): the leases are closed and booked, then the
        estimates are written, one write for all of them.
        """
        reply = await self._eval("expire_leases", [started_before_ms, now_ms])
        self._observed(reply[0])
        expired: list[Lease] = []
        folds: dict[str, _Fold] = {}
        counts: dict[str, int] = {}
        for i in range(1, len(reply), 5):
            request_id, agent_id, started, model, raw = reply[i : i + 5]
            expired.append(Lease(request_id, agent_id, int(started), unquote(model)))
            self._opened.discard(agent_id, request_id)
            booked = _decode_record(raw)
            pending = folds.get(agent_id)
            counts[agent_id] = counts.get(agent_id, 0) + 1
            if pending is None:
                folds[agent_id] = _Fold(agent_id, _expiries(1), booked, 0, 0)
            else:
                # Folded in turn on the record as each close booked it, as the memory
                # store does (write_estimates keeps the bookkeeping of the last); after
                # a conflict, all of them again on the record as it is then.
                pending.result = fold_expiry(_with_estimates(booked.stats, pending.result))
                pending.refold = _expiries(counts[agent_id])
        if folds:
            await self._write_estimates(now_ms, list(folds.values()))
        return expired

    async def expire_ejections(self, now_ms: int) -> list[str]:
        """Bring back agents whose ejection is over; returns their ids (changes the version)."""
        reply = await self._eval("expire_ejections", [now_ms])
        self._observed(reply[0])
        back = [(int(reply[i + 1]), reply[i]) for i in range(1, len(reply), 2)]
        for _, agent_id in back:
            self._ejections.pop(agent_id, None)
        # Hash order is arbitrary: report them in the order their ejections ended.
        return [agent_id for _, agent_id in sorted(back)]

    async def expire_sessions(self, idle_since_ms: int) -> int:
        """Drop bindings not used since the cutoff; returns how many."""
        return int(await self._eval("expire_sessions", [idle_since_ms]))

    async def forget_idle(self, idle_since_ms: int, keep: int) -> int:
        """Forget the load history of ids neither registered nor holding a lease.

        An id goes when unused (picked, started or ended) since the cutoff, or when more
        than ``keep`` such ids remain (least recently used first). Its selections stay
        counted under the empty id in ``selections_by_agent``. Returns how many went.
        """
        gone, version = await self._eval("forget_idle", [idle_since_ms, keep])
        self._observed(version)
        return int(gone)

    # Health.
    async def health(self) -> Mapping[str, HealthRecord]:
        """Health records of the registered agents that have one (one HGETALL)."""
        raw = await self._call(lambda r: r.hgetall(self._key("health")))
        return {agent_id: decode_health(text) for agent_id, text in raw.items()}

    async def health_of(self, agent_id: str) -> HealthRecord | None:
        """One agent's health record, or None (one HGET)."""
        text = await self._call(lambda r: r.hget(self._key("health"), agent_id))
        return decode_health(text) if text is not None else None

    async def put_health(
        self, agent_id: str, record: HealthRecord, expected: HealthRecord | None
    ) -> HealthWrite:
        """Replace the agent's record if it is still ``expected``: one script, atomic."""
        reply = await self._eval(
            "put_health",
            [
                agent_id,
                encode_health(record),
                encode_health(expected) if expected is not None else "",
                out_value(record),
            ],
        )
        if isinstance(reply, str):
            return HealthWrite(reply)
        self._observed(reply[1])
        return HealthWrite.APPLIED

    async def claim_probe(self, agent_id: str, now_ms: int, hold_ms: int) -> bool:
        """Claim the agent's next probe: ``SET NX PX hold_ms``, so it lapses by itself."""
        key = self._key(f"probe_claim:{agent_id}")
        claimed = await self._call(
            lambda r: r.set(key, now_ms, nx=True, px=max(int(hold_ms), 1)), writes=True
        )
        return bool(claimed)

    # Reads and change notification.
    async def stats(self) -> Mapping[str, AgentStats]:
        """Load history of every agent id ever seen, in the order they were first seen."""

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.hgetall(self._key("stats"))
            pipe.hgetall(self._key("pending"))
            return await pipe.execute()

        return _records_in_order(*await self._call(read))

    async def session_count(self) -> int:
        """Sticky-session bindings held."""
        return int(await self._call(lambda r: r.hlen(self._key("bindings"))))

    async def lease_count(self) -> int:
        """Leases open (what the max_leases limit counts): one HLEN, not the leases."""
        return int(await self._call(lambda r: r.hlen(self._key("leases"))))

    async def leases(self) -> Mapping[str, Lease]:
        """Every open lease by request_id, in the order they started."""

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.zrange(self._key("lease_order"), 0, -1)
            pipe.hgetall(self._key("leases"))
            return await pipe.execute()

        order, records = await self._call(read)
        leases: dict[str, Lease] = {}
        for request_id in order:
            record = records.get(request_id)
            if record is not None:
                leases[request_id] = _decode_lease(request_id, record)
        return MappingProxyType(leases)

    async def counters(self) -> Counters:
        """Service-wide counters."""

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.hgetall(self._key("counters"))
            pipe.hgetall(self._key("selections"))
            return await pipe.execute()

        counters, selections = await self._call(read)
        return _counters(counters, selections)

    async def overview(self) -> Overview:
        """Strategy, registry, weights, every load record and the counters: one script.

        The cached configuration is re-validated in the same reply, as in ``pick_state``.
        """
        sent = self._config
        (
            config_version,
            payload,
            flat_stats,
            flat_counters,
            flat_selections,
            flat_health,
            flat_pending,
        ) = await self._eval(
            "overview",
            [sent.version if sent is not None else "", self._default_strategy.value],
            writes=False,
        )
        config = self._adopt(config_version, payload, sent)
        return Overview(
            strategy=config.strategy,
            agents=config.agents,
            weights=config.weights,
            stats=_records_in_order(_pairs(flat_stats), _pairs(flat_pending)),
            counters=_counters(_pairs(flat_counters), _pairs(flat_selections)),
            health={k: decode_health(v) for k, v in _pairs(flat_health).items()},
        )

    async def wait_for_change(self, seen_version: int) -> int:
        """Wait until the state version differs from ``seen_version``; return the new one.

        Changes made through this replica wake waiters at once; those made through
        others are seen by the shared poller within ``POLL_INTERVAL_S``.
        """
        self._waiters += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_versions())
        try:
            while self._version == seen_version:
                if self._changed.is_set():
                    # The change it signalled has been seen: arm a fresh event to wait on.
                    self._changed = asyncio.Event()
                await self._changed.wait()
        finally:
            self._waiters -= 1
        return self._version

    def version(self) -> int:
        """The highest state version this replica has seen (from its calls or the poller)."""
        return self._version

    async def check(self) -> None:
        """Return when Redis answers PING; raise ``StoreUnavailable`` when it does not."""
        await self._call(lambda r: r.ping())

    # Internals.
    def _key(self, name: str) -> str:
        return f"{self._prefix}:{name}"

    def _epoch_candidate(self) -> str:
        # Fresh per call: if Redis lost the epoch it is re-created from this, and a new
        # random one keeps ids issued after the loss from repeating earlier ones.
        return self._epoch if self._epoch is not None else secrets.token_hex(4)

    def _strategy_named(self, name: str | None) -> StrategyName:
        try:
            return StrategyName(name)
        except ValueError:
            # Written by a newer release, say: this replica still picks with its own.
            return self._default_strategy

    async def _current_config(self) -> _Config:
        sent = self._config
        version, payload = await self._eval(
            "config",
            [sent.version if sent is not None else "", self._default_strategy.value],
            writes=False,
        )
        return self._adopt(version, payload, sent)

    def _adopt(self, version: str, payload: list[Any] | None, sent: _Config | None) -> _Config:
        """The configuration a reply describes; cached unless a newer one already is.

        With no payload the reply confirms ``sent``, the copy the call was made with (a
        concurrent call may have cached a newer one meanwhile: this reply's load records
        line up with ``sent``).
        """
        if payload is None:
            if sent is None:  # never: a reply omits the payload only when sent matched
                raise StoreUnavailable(f"Redis store at {self.where} answered out of order")
            return sent
        strategy, ids, jsons, flat_weights = payload
        agents = {
            agent_id: _decode_agent(text)
            for agent_id, text in zip(ids, jsons, strict=True)
            if text is not None
        }
        config = _Config(
            version=version,
            strategy=self._strategy_named(strategy),
            agents=MappingProxyType(agents),
            ids=tuple(ids),
            weights=MappingProxyType(
                {
                    flat_weights[i]: float(flat_weights[i + 1])
                    for i in range(0, len(flat_weights), 2)
                }
            ),
        )
        self._cache(config)
        return config

    def _cache(self, config: _Config) -> None:
        """Keep ``config`` as the cached configuration unless a newer one already is."""
        # Configuration versions only grow (a lost counter restarts above, from the
        # server clock), so the larger one is the newer.
        if self._config is None or int(config.version) >= int(self._config.version):
            self._config = config

    def _registered_stats(self, ids: tuple[str, ...], joined: str) -> dict[str, AgentStats]:
        """The registered agents' records from a pick_state reply (one per line, in order).

        Most agents' records do not change between two picks (only the picked one's
        and those whose requests ended did), so each id's last decoded record is kept
        and re-used while its text is the same.
        """
        if not ids:
            return {}
        previous = self._decoded
        decoded: dict[str, tuple[str, _Record]] = {}
        stats: dict[str, AgentStats] = {}
        for agent_id, raw in zip(ids, joined.split("\n"), strict=True):
            if not raw:
                continue
            known = previous.get(agent_id)
            record = known[1] if known is not None and known[0] == raw else None
            if record is None:
                record = _decode_record(raw)
            decoded[agent_id] = (raw, record)
            stats[agent_id] = record.stats
        # Replaced, not updated: ids that left the registry are not kept.
        self._decoded = decoded
        return stats

    async def _write_estimates(self, now_ms: int, folds: list[_Fold]) -> list[_Fold]:
        """Write the folds' estimates (``write_estimates``), computing again on conflict.

        A fold that still conflicts after ``FOLD_ATTEMPTS`` writes, or one Redis failed
        to take, is dropped with a warning: estimates are soft state, and the lease it
        came from is already closed (the module docstring). Returns the dropped folds.
        """
        pending = folds
        try:
            for _ in range(FOLD_ATTEMPTS):
                args: list[str | int] = [now_ms]
                for fold in pending:
                    args += fold.arguments(now_ms)
                reply = await self._eval("write_estimates", args)
                self._observed(reply[0])
                conflicts = []
                for fold, i in zip(pending, range(1, len(reply), 4), strict=True):
                    if reply[i] == "conflict":
                        fold.again(
                            _decode_record(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3])
                        )
                        conflicts.append(fold)
                pending = conflicts
                if not pending:
                    return []
            reason = f"{FOLD_ATTEMPTS} conflicting writes"
        except StoreUnavailable as error:
            reason = str(error)
        for fold in pending:
            log.warning("estimates_dropped", agent_id=fold.agent_id, reason=reason)
        return pending

    def _observed(self, version: object) -> None:
        """Note a state version read from Redis; wake waiters when it is new."""
        if version is None:
            return
        value = int(str(version))
        if value > self._version:
            self._version = value
            self._changed.set()

    async def _poll_versions(self) -> None:
        """Read the state version every POLL_INTERVAL_S while anyone waits (one per store)."""
        while self._waiters:
            # An outage only delays change notification; the waiters' own reads report it.
            with contextlib.suppress(StoreUnavailable):
                self._observed(await self._call(lambda r: r.get(self._key("version"))))
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _eval(self, name: str, args: Sequence[str | int], *, writes: bool = True) -> Any:
        """Run one of the scripts (EVALSHA; loaded again by redis-py on NOSCRIPT)."""
        with self._reaching(writes):
            return await self._scripts[name](args=[self._prefix, *args])

    async def _call(
        self, command: Callable[[Redis], Awaitable[Any]], *, writes: bool = False
    ) -> Any:
        """Run ``command(client)``: one command or one pipeline, one round trip."""
        with self._reaching(writes):
            return await command(self._redis)

    @contextlib.contextmanager
    def _reaching(self, writes: bool) -> Iterator[None]:
        """The one place Redis errors become ``StoreUnavailable`` (no redis error leaks)."""
        try:
            yield
        except (redis_errors.RedisError, OSError) as error:
            raise StoreUnavailable(_explain(self.where, self._timeout_ms, error, writes)) from error


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    """A flat HGETALL reply from a script (key, value, key, value, ...) as a dict."""
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _records_in_order(
    raw: Mapping[str, str], pending: Mapping[str, str]
) -> Mapping[str, AgentStats]:
    """The load records of a stats hash with their pending picks, in the order first seen."""
    decoded = sorted(
        ((_decode_record(text), agent_id) for agent_id, text in raw.items()),
        key=lambda entry: entry[0].born,
    )
    stats = {agent_id: record.stats for record, agent_id in decoded}
    _count_pending(stats, pending)
    return MappingProxyType(stats)


def _count_pending(stats: dict[str, AgentStats], pending: Mapping[str, str]) -> None:
    """Set ``AgentStats.pending`` from the pending hash (only ids with pending picks)."""
    for agent_id, count in pending.items():
        record = stats.get(agent_id)
        if record is not None:
            stats[agent_id] = replace(record, pending=int(count))


def _counters(counters: Mapping[str, str], selections: Mapping[str, str]) -> Counters:
    """``Counters`` from the counters and selections hashes."""
    return Counters(
        total_selections=int(counters.get("selections", 0)),
        failed_selections=int(counters.get("failed", 0)),
        total_requests=int(counters.get("issued", 0)),
        latency_sum_ms=float(counters.get("latency_sum", 0.0)),
        latency_samples=int(counters.get("samples", 0)),
        selections_by_agent={agent_id: int(n) for agent_id, n in selections.items()},
    )


def _describe(connection: Mapping[str, Any]) -> str:
    if connection.get("path"):
        return f"unix:{connection['path']}"
    return f"{connection.get('host', 'localhost')}:{connection.get('port', 6379)}"


def _explain(where: str, timeout_ms: float, error: BaseException, writes: bool) -> str:
    """A StoreUnavailable message: the server, what went wrong, whether anything changed."""
    rejected = False  # the server refused the call before running it
    if isinstance(error, redis_errors.BusyLoadingError):
        problem, rejected = "is loading its data set", True
    elif isinstance(error, redis_errors.ReadOnlyError):
        problem, rejected = "is a read-only replica", True
    elif isinstance(error, redis_errors.OutOfMemoryError):
        problem, rejected = "is out of memory (maxmemory reached)", True
    elif isinstance(error, redis_errors.TimeoutError | TimeoutError):
        problem = f"did not answer within {timeout_ms:g} ms"
    elif isinstance(error, redis_errors.ConnectionError | OSError):
        problem = f"is unreachable ({_reason(error)})"
        rejected = _before_sending(error)
    else:
        problem = f"failed the call ({error})"
    unknown = "; the change may or may not have been made" if writes and not rejected else ""
    return f"Redis store at {where} {problem}{unknown}; retry later"


def _reason(error: BaseException) -> str:
    """The operating system's words for a connection failure, else redis-py's."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(error).rstrip(".") or type(error).__name__


def _before_sending(error: BaseException) -> bool:
    """Whether a connection error happened while connecting (so nothing was sent)."""
    text = str(error)
    return (
        isinstance(error, redis_errors.MaxConnectionsError)
        or "connecting to" in text
        or "No connection available" in text
    )


class _Record(NamedTuple):
    """A load record as stored: the figures, the order first seen in, the estimate version."""

    stats: AgentStats
    born: int
    #: Moved by every estimate write (``ev`` in the scripts), not by bookkeeping.
    estimate_version: int


#: A fold's rule: the estimates from a record, the ejected count and the population.
_Rule = Callable[[AgentStats, int, int], AgentStats]


def _end_rule(end: RequestEnd, closed: bool, model: str) -> _Rule:
    """``feedback.fold_end`` of this end, as a fold's rule.

    ``closed``: it closed a lease, whose request asked for ``model``.
    """

    def fold(stats: AgentStats, ejected_now: int, population: int) -> AgentStats:
        return fold_end(
            stats,
            closed,
            end.latency_ms,
            end.failed,
            end.now_ms,
            end.feedback,
            ejected_now,
            population,
            model,
        )

    return fold


def _expiries(count: int) -> _Rule:
    """``feedback.fold_expiry`` applied ``count`` times: one agent's leases of one sweep."""

    def fold(stats: AgentStats, ejected_now: int, population: int) -> AgentStats:
        for _ in range(count):
            stats = fold_expiry(stats)
        return stats

    return fold


class _Fold:
    """One agent's estimates to write, and how to compute them again on a conflict."""

    __slots__ = (
        "agent_id",
        "ejected_now",
        "estimate_version",
        "population",
        "record",
        "refold",
        "result",
    )

    def __init__(
        self, agent_id: str, refold: _Rule, record: _Record, ejected_now: int, population: int
    ) -> None:
        self.agent_id = agent_id
        self.refold = refold
        self.record = record.stats
        self.estimate_version = record.estimate_version
        self.ejected_now = ejected_now
        self.population = population
        self.result: AgentStats = refold(record.stats, ejected_now, population)

    def again(self, record: _Record, ejected_now: int, population: int) -> None:
        """Compute the estimates again from the record as it is now (after a conflict)."""
        self.record, self.estimate_version = record.stats, record.estimate_version
        self.ejected_now, self.population = ejected_now, population
        self.result = self.refold(record.stats, ejected_now, population)

    def arguments(self, now_ms: int) -> list[str | int]:
        """The five ``write_estimates`` arguments of this fold."""
        result = self.result
        ejects = result.ejected_until_ms != self.record.ejected_until_ms and is_ejected(
            result, now_ms
        )
        return [
            self.agent_id,
            self.estimate_version,
            " ".join([*_estimate_fields(result), str(self.record.last_request_at_ms)]),
            result.ejected_until_ms if ejects else "",
            self.ejected_now if ejects else "",
        ]


class _OpenedHere:
    """The models of the leases this replica opened, per agent in the order opened.

    What an end guesses the model of the lease it closes from (``_guess_end``): the
    request's own lease, or for an end naming none the agent's oldest. Only a guess,
    checked by the script: a lease opened through another replica is not here (its
    model guessed as none), and one ended or expired through another stays until this
    replica sees its agent idle, or until ``LIMIT`` are held and all are dropped. A wrong
    guess costs the end its second step, nothing more.
    """

    LIMIT = 16_384

    def __init__(self) -> None:
        """Hold none."""
        self._by_agent: dict[str, dict[str, str]] = {}
        self._held = 0

    def add(self, agent_id: str, request_id: str, model: str) -> None:
        """Note a lease this replica opened."""
        if self._held >= self.LIMIT:
            self._by_agent.clear()
            self._held = 0
        self._by_agent.setdefault(agent_id, {})[request_id] = model
        self._held += 1

    def discard(self, agent_id: str, request_id: str) -> None:
        """Forget a lease that closed (nothing if it is not held)."""
        leases = self._by_agent.get(agent_id)
        if leases is not None and leases.pop(request_id, None) is not None:
            self._held -= 1
            if not leases:
                del self._by_agent[agent_id]

    def idle(self, agent_id: str) -> None:
        """Forget the agent's leases: it holds none open."""
        self._held -= len(self._by_agent.pop(agent_id, {}))

    def model(self, agent_id: str, request_id: str) -> str:
        """The model of the lease ``request_id`` ("": the agent's oldest) as opened here."""
        leases = self._by_agent.get(agent_id, {})
        if request_id:
            return leases.get(request_id, "")
        return next(iter(leases.values()), "")


def _with_estimates(booked: AgentStats, folded: AgentStats) -> AgentStats:
    """What ``write_estimates`` stores: ``folded``'s estimates on ``booked``'s bookkeeping.

    For records booked by one script (closes set no ``last_request_at_ms``).
    """
    return replace(booked, **{name: getattr(folded, name) for name in ESTIMATES})


def _estimate_fields(stats: AgentStats) -> list[str]:
    """``stats``' ESTIMATES as ``write_estimates`` reads them, ``MODEL_COST`` as one field."""
    *figures, last = (_number(getattr(stats, name)) for name in ESTIMATES if name not in MODEL_COST)
    return [*figures, _encode_model_cost(stats), last]


def _quote(name: str) -> str:
    """A model name as records keep it: percent-encoded, so no space, comma or semicolon."""
    return quote(name, safe="")


def _encode_model_cost(stats: AgentStats) -> str:
    """The model-cost figures as one record field: "-" for none, else ``;``-separated.

    ``<model>,<mean log latency>,<samples>,<share>`` per model in the order kept
    (``_quote``d names; floats as ``repr``, so they read back exactly).
    """
    if not stats.model_latency:
        return "-"
    return ";".join(
        f"{_quote(model)},{_number(float(mean))},{samples},{_number(float(share))}"
        for model, mean, samples, share in stats.model_latency
    )


def _decode_model_cost(text: str) -> dict[str, Any]:
    """``MODEL_COST`` from its record field (``_encode_model_cost``; "-": none)."""
    if text == "-":
        return {}
    entries = (entry.split(",") for entry in text.split(";"))
    return {
        "model_latency": tuple(
            (unquote(name), float(mean), int(samples), float(share))
            for name, mean, samples, share in entries
        )
    }


def _decode_lease(request_id: str, text: str) -> Lease:
    """A lease record, ``<started_at_ms>[,<model>] <agent id>`` (no model in older ones)."""
    head, _, agent_id = text.partition(" ")
    started, _, model = head.partition(",")
    return Lease(request_id, agent_id, int(started), unquote(model))


def _number(value: float | None) -> str:
    """A figure as the scripts read it: "-" for None, repr() for a float (exact)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def _encode_agent(agent: Agent) -> str:
    """An agent as compact JSON (positional, so the registry stays small)."""
    hardware = agent.hardware
    return json.dumps(
        [
            agent.id,
            agent.host,
            agent.port,
            list(agent.models),
            hardware.gpu,
            hardware.vram_gb,
            hardware.cpu_cores,
            hardware.ram_gb,
            dict(agent.metadata),
            agent.max_connections,
            # Only as far as declared, so a replica of an older release reads the record.
            *_trailing(agent),
        ],
        separators=(",", ":"),
        allow_nan=False,
    )


def _trailing(agent: Agent) -> list[object]:
    """The fields added after the first release, without the defaults at the end."""
    fields: list[object] = [
        agent.parallel_slots,
        agent.engine.value,
        agent.heartbeat_ttl_ms,
        agent.probe_path,
    ]
    while fields and not fields[-1]:
        fields.pop()
    return fields


def _decode_agent(text: str) -> Agent:
    # An agent written before a trailing field existed lacks it: its default, as it was.
    agent_id, host, port, models, gpu, vram_gb, cpu_cores, ram_gb, metadata, limit, *rest = (
        json.loads(text)
    )
    rest += [0, "", 0, ""][len(rest) :]
    return Agent(
        id=agent_id,
        host=host,
        port=port,
        models=tuple(models),
        hardware=Hardware(gpu=gpu, vram_gb=vram_gb, cpu_cores=cpu_cores, ram_gb=ram_gb),
        metadata=metadata,
        max_connections=limit,
        parallel_slots=rest[0],
        engine=Engine(rest[1]),
        heartbeat_ttl_ms=rest[2],
        probe_path=rest[3],
    )


#: Fields in a load record (``decode_stats`` in the scripts); older records have fewer.
_RECORD_FIELDS = 22


def _decode_record(text: str) -> _Record:
    """A load record (``encode_stats`` in the scripts); fields it lacks read as none (0)."""
    fields = text.split(" ")
    if len(fields) < _RECORD_FIELDS:
        fields += ["0"] * (_RECORD_FIELDS - 1 - len(fields)) + ["-"]
    (
        active,
        avg,
        last,
        total,
        failed,
        cost,
        cost_at,
        consecutive,
        ejected_until,
        times_ejected,
        joined,
        _seen,
        born,
        busy_total,
        activity_at,
        completions,
        cap_done,
        cap_busy,
        cap_mark,
        ev,
        slots,
        model_cost,
    ) = fields[:_RECORD_FIELDS]
    return _Record(
        AgentStats(
            active=int(active),
            avg_latency_ms=None if avg == "-" else float(avg),
            last_request_at_ms=int(last),
            total_requests=int(total),
            failed_requests=int(failed),
            cost_ms=None if cost == "-" else float(cost),
            cost_at_ms=int(cost_at),
            consecutive_failures=int(consecutive),
            ejected_until_ms=int(ejected_until),
            times_ejected=int(times_ejected),
            joined_ms=int(joined),
            busy_total_ms=float(busy_total),
            activity_at_ms=int(activity_at),
            completions=int(completions),
            cap_done=float(cap_done),
            cap_busy_ms=float(cap_busy),
            cap_mark_ms=float(cap_mark),
            slots=max(int(slots), 1),
            **_decode_model_cost(model_cost),
        ),
        int(born),
        int(ev),
    )

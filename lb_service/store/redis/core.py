"""The Redis store's shared state: the connection, the scripts, the cached configuration.

The registry, weights and strategy are cached in the replica and re-validated in
every script that reads them against a configuration version that every change to
them increments; when it moved, the same reply carries the new configuration, so even
a reload costs no extra round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from lb_service.errors import StoreUnavailable
from lb_service.model import Agent, StrategyName
from lb_service.store.redis.connection import connect, describe, explain
from lb_service.store.redis.estimates import OpenedHere
from lb_service.store.redis.records import Record, decode_agent, decode_record
from lb_service.store.redis.scripts import script_sources

if TYPE_CHECKING:  # the mirror module imports this one
    from lb_service.store.redis.mirror import Mirror


@dataclass(frozen=True, slots=True)
class Config:
    """The registry, weights and strategy as of one configuration version."""

    version: str
    strategy: StrategyName
    agents: Mapping[str, Agent]
    #: The registry's ids in registration order, as the scripts list them (load
    #: records in a ``pick_state`` reply come in this order).
    ids: tuple[str, ...]
    weights: Mapping[str, float]


class RedisCore:
    """What every part of the store shares: connection, scripts, caches, versions seen.

    The connection and its scripts, the cached configuration, this replica's copies of
    load records (and the index over them: ``mirror``), and the highest state version
    seen.

    Each group of operations (``registry``, ``decisions``, ``leases``, ...) is a class
    of its own on this one; ``RedisStore`` is all of them together.
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
        self._redis = connect(url, timeout_ms, pool_size, retries)
        #: The server as error messages name it (never with credentials).
        self.where = describe(self._redis.connection_pool.connection_kwargs)
        self._prefix = prefix
        self._timeout_ms = timeout_ms
        self._default_strategy = strategy
        self._epoch = epoch
        self._scripts: dict[str, AsyncScript] = {
            name: self._redis.register_script(source) for name, source in script_sources().items()
        }
        self._config: Config | None = None
        # Agent id -> (record text, decoded record) as this replica last read or wrote it:
        # re-used while the text is the same, and what a request end guesses from.
        self._decoded: dict[str, tuple[str, Record]] = {}
        # The registered agents' load records as picks last read them, and their index.
        self._mirror: Mirror | None = None
        # The models of the leases this replica opened: what an end guesses its model from.
        self._opened = OpenedHere()
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

    async def _current_config(self) -> Config:
        sent = self._config
        version, payload = await self._eval(
            "config",
            [sent.version if sent is not None else "", self._default_strategy.value],
            writes=False,
        )
        return self._adopt(version, payload, sent)

    def _adopt(self, version: str, payload: list[Any] | None, sent: Config | None) -> Config:
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
            agent_id: decode_agent(text)
            for agent_id, text in zip(ids, jsons, strict=True)
            if text is not None
        }
        config = Config(
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

    def _cache(self, config: Config) -> None:
        """Keep ``config`` as the cached configuration unless a newer one already is."""
        # Configuration versions only grow (a lost counter restarts above, from the
        # server clock), so the larger one is the newer.
        if self._config is None or int(config.version) >= int(self._config.version):
            self._config = config

    def _remember(self, agent_id: str, raw: str) -> None:
        """Keep a record text a script returned as this replica's copy of the agent's record.

        Kept for registered agents only (an end is guessed only for those), so ids a
        caller names as candidates cannot grow the copies without bound.
        """
        known = self._decoded.get(agent_id)
        if known is None or known[0] != raw:
            record = decode_record(raw)
            config = self._config
            if config is not None and agent_id in config.agents:
                self._decoded[agent_id] = (raw, record)
            if not record.stats.active:
                self._opened.idle(agent_id)

    def _observed(self, version: object) -> None:
        """Note a state version read from Redis; wake waiters when it is new."""
        if version is None:
            return
        value = int(str(version))
        if value > self._version:
            self._version = value
            self._changed.set()

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
            raise StoreUnavailable(explain(self.where, self._timeout_ms, error, writes)) from error

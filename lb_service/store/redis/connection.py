"""Reaching Redis: the connection pool, and what a failed call tells the caller.

Every Redis error becomes ``StoreUnavailable`` naming the server (one place:
``RedisCore._reaching``, with ``explain``'s words). Calls fail fast (connect and read
timeouts of ``timeout_ms``, a pool of ``pool_size`` connections waited for at most
``timeout_ms``) and are retried ``retries`` times, with jittered exponential back-off,
on connection errors only (a timed-out script may have run; it is not sent again).
Nothing needs restarting when Redis comes back: connections are re-made, scripts
re-loaded on NOSCRIPT, and the epoch, strategy and version counters re-created by the
scripts that need them. Run Redis with ``maxmemory-policy noeviction``: an evicted key
is lost state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff


def connect(url: str, timeout_ms: float, pool_size: int, retries: int) -> Redis:
    """A client of ``url`` with a pool of ``pool_size`` connections; no I/O happens here.

    Each call fails within about ``timeout_ms`` per attempt (connect, read, and the wait
    for a connection) and is retried ``retries`` times on connection errors only.
    """
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
    return Redis.from_pool(pool)


def describe(connection: Mapping[str, Any]) -> str:
    """The server as error messages name it: host:port or unix:path, never credentials."""
    if connection.get("path"):
        return f"unix:{connection['path']}"
    return f"{connection.get('host', 'localhost')}:{connection.get('port', 6379)}"


def explain(where: str, timeout_ms: float, error: BaseException, writes: bool) -> str:
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

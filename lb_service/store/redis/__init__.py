"""The Redis store: one state shared by several lb-service replicas, so they answer as one.

Everything that decides a pick lives in Redis under ``<prefix>:``: the registry, weights
and strategy, every agent's load record, leases, sticky bindings, counters and
ejections. State changes are made by Lua scripts (``lua/``, one file per operation, run
with EVALSHA), each atomic on the server, so concurrent replicas never interleave inside
one: a pick selects and counts in one step, a session binds once, a lease ends once and
a lease expires once however many replicas sweep together.

Every rule is written once, in Python. The scripts keep only what must be atomic:
the bookkeeping of leases (counts and busy time: the few lines of
``feedback.open_lease``/``close_lease``, mirrored in Lua and held equal by the tests),
a compare-and-set write of figures Python computed, and the re-rank of a pick's
contenders, one generic comparison of ranks the strategy computed (``Contender``).

Where each part lives (one job a module):

- ``store``: ``RedisStore``, every group below as one ``Store``, and its lifecycle.
- ``registry``: agents, weight overrides and the strategy.
- ``decisions``: what a pick reads (``pick_state``) and its atomic commit; pending picks.
- ``mirror``: the replica's copy of the registered agents' records, kept current with
  the records changed since its last read, and the index a pick decides from.
- ``leases``: request starts, ends and expiries.
- ``estimates``: the estimates an end or expiry folds in Python, written back
  compare-and-set, and the one-step end when a replica guesses it right.
- ``housekeeping``: ejections that are over, idle sessions, forgotten ids.
- ``health``: health records and probe claims.
- ``reads``: load records, leases, counters and the overview GetLoads reads.
- ``feed``: the state version and waiting for it to move (WatchLoads).
- ``core``: the shared state: connection, scripts, cached configuration.
- ``connection``: the connection pool and what a failed call says.
- ``records``: how agents, load records and leases are written as text.
- ``scripts`` and ``lua/``: the Lua scripts, one file per operation (``lua/README.md``).

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
"""

from __future__ import annotations

from lb_service.store.redis.estimates import FOLD_ATTEMPTS
from lb_service.store.redis.feed import POLL_INTERVAL_S
from lb_service.store.redis.records import BOOKKEEPING, ESTIMATES, MODEL_COST
from lb_service.store.redis.store import RedisStore

__all__ = [
    "BOOKKEEPING",
    "ESTIMATES",
    "FOLD_ATTEMPTS",
    "MODEL_COST",
    "POLL_INTERVAL_S",
    "RedisStore",
]

"""A replica's copy of the registered agents' load records, and the index over it.

A pick on the Redis store once read and decoded every registered agent's record and
scanned them all, so its cost grew with the fleet (``make bench-cluster``: 18.5x at
1,000 agents what it was at 10; 1.0-1.5x since). Now every change to a load record or
to an agent's pending picks is numbered in Redis (``lua/lib/changes.lua``);
``pick_state`` returns only the records changed since the number this replica's copy is
current to, and the replica folds them into its copy, which an ``AgentIndex`` indexes
exactly as the memory store's own. So a pick reads and
decodes what moved since the last one and decides from the index (``decision.indexed``);
the commit still re-ranks its contenders on Redis's live loads.

The copy belongs to one configuration version (registry and weights): a reply that
reports a new one carries every registered agent's record, and a new copy is built from
it. Replies may arrive out of order (a pool of connections): each record comes with its
change number and replaces the copy's only when newer, and a reply made under an older
configuration than the copy's is not folded in (the copy was read after it). The
number the copy is current to only grows: a reply covers every change from the number
it was asked with up to the counter it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from lb_service.store.base import AgentStats
from lb_service.store.index import AgentIndex
from lb_service.store.redis.core import Config
from lb_service.store.redis.records import Record, with_pending


class Mirror:
    """The load records of one configuration's registered agents, as this replica last read them."""

    __slots__ = ("_numbers", "config", "index", "since", "stats")

    def __init__(self, config: Config) -> None:
        """An empty copy for ``config``; the first reply folded in fills it."""
        self.config = config
        #: Agent id -> its record, pending picks counted (``AgentStats.pending``).
        self.stats: dict[str, AgentStats] = {}
        #: The change number every change up to which the copy holds.
        self.since = 0
        self._numbers: dict[str, int] = {}
        self.index = AgentIndex(config.agents, self.stats, config.weights)

    def fold(
        self,
        ids: Sequence[str],
        records: Sequence[tuple[str, Record] | None],
        numbers: Sequence[str],
        pending: Sequence[str | None],
        counter: str | None,
    ) -> list[tuple[str, tuple[str, Record]]]:
        """Take the records of a reply that are newer than the copy's; return those taken.

        ``ids`` and the rest line up (``pick_state.lua``): a record as text and decoded
        (None where the agent has none yet), its change number, its pending picks;
        ``counter`` is the change counter when the reply was made (None before the first
        change).
        """
        agents, known = self.config.agents, self._numbers
        taken = []
        for agent_id, record, number, count in zip(ids, records, numbers, pending, strict=True):
            if record is None or agent_id not in agents:
                continue  # a candidate's record, or an agent never picked or started
            changed = int(float(number))
            if changed <= known.get(agent_id, -1):
                continue  # a reply that left Redis before the one the copy holds
            known[agent_id] = changed
            self.stats[agent_id] = with_pending(record[1].stats, count)
            self.index.load_changed(agent_id)
            taken.append((agent_id, record))
        if counter is not None:
            self.since = max(self.since, int(counter))
        return taken

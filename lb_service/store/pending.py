"""Pending picks: selections made without a lease, counted as load until confirmed or held out.

A dispatcher that selects without ``acquire`` reports its request's start afterwards
(``RecordRequestStart``), often late: batched, over a slow network, through a queue.
Until that report arrives the agent's open-request count does not show the request,
and every decision meanwhile sees the same picture: a full scan sends them all to the
one "least loaded" agent (herding), and even two choices lean that way. So a pick
without a lease counts as one request in flight on its agent (``AgentStats.pending``)
until the first of: a start reported on that agent (which opens the lease and confirms
the oldest pending pick there), or its hold ending (``pick_hold_s``, 1 s by default:
a dispatcher that never reports starts leaves no load behind for longer than that).

``PendingPicks`` is the memory store's bookkeeping: per agent, the deadlines of its
pending picks in order, and all of them in one queue in deadline order, so both a
confirmation and an expiry cost O(1) per pick (a confirmed pick is skipped, not
searched for, when its deadline comes).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

#: What ``expire`` returns when nothing is due.
_NONE: Mapping[str, int] = MappingProxyType({})


class PendingPicks:
    """Pending picks per agent, each with its deadline; see the module docstring."""

    def __init__(self) -> None:
        """Start with none pending."""
        # (deadline, agent id, token) in deadline order (holds are equal, so pick order).
        self._queue: deque[tuple[int, str, int]] = deque()
        # Per agent, the tokens of its pending picks, oldest first.
        self._by_agent: dict[str, deque[int]] = {}
        self._issued = 0

    def hold(self, agent_id: str, deadline_ms: int) -> None:
        """Count one pick on ``agent_id`` as pending until ``deadline_ms``."""
        self._issued += 1
        self._queue.append((deadline_ms, agent_id, self._issued))
        self._by_agent.setdefault(agent_id, deque()).append(self._issued)

    def confirm(self, agent_id: str) -> bool:
        """A start was reported on ``agent_id``: its oldest pending pick ends; False if none."""
        tokens = self._by_agent.get(agent_id)
        if not tokens:
            return False
        tokens.popleft()
        if not tokens:
            del self._by_agent[agent_id]
        return True

    def expire(self, now_ms: int) -> Mapping[str, int]:
        """End the picks whose deadline has come; return how many per agent."""
        queue = self._queue
        if not queue or queue[0][0] > now_ms:
            return _NONE  # nothing is due
        # A plain dict: a Counter's construction and its missing-key hook cost more than
        # the rest of this method, which runs on most commits under steady traffic.
        ended: dict[str, int] = {}
        while queue and queue[0][0] <= now_ms:
            _, agent_id, token = queue.popleft()
            tokens = self._by_agent.get(agent_id)
            # Confirmations take the oldest token, and deadlines come in token order:
            # a pick still pending is the agent's oldest.
            if tokens and tokens[0] == token:
                tokens.popleft()
                if not tokens:
                    del self._by_agent[agent_id]
                ended[agent_id] = ended.get(agent_id, 0) + 1
        return ended

    def forget(self, agent_id: str) -> None:
        """Drop the agent's pending picks (its history is forgotten)."""
        self._by_agent.pop(agent_id, None)

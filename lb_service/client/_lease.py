"""Lease: the agent an ``acquire`` block sends its request to, and the lease it holds."""

from __future__ import annotations

from lb_service.model import Agent, Selection


class Lease:
    """An acquired pick, as ``acquire`` yields it; the end is recorded when the block exits.

    The end counts as failed when the block raises, or when ``mark_failed`` was called
    (for an agent that answered, but with an error the block handled itself).
    """

    __slots__ = ("_failed", "selection")

    def __init__(self, selection: Selection) -> None:
        """Hold ``selection``, which must carry a request id."""
        self.selection = selection
        self._failed = False

    @property
    def agent(self) -> Agent:
        """The agent to send the request to."""
        return self.selection.agent

    @property
    def request_id(self) -> str:
        """The lease id the end is recorded against."""
        return self.selection.request_id

    @property
    def failed(self) -> bool:
        """Whether the end will be recorded as failed even if the block returns normally."""
        return self._failed

    def mark_failed(self) -> None:
        """Record the request as failed when the block exits, even without an exception."""
        self._failed = True

    def __repr__(self) -> str:
        return f"Lease(agent={self.agent.id!r}, request_id={self.request_id!r})"

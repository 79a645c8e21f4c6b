"""What a decision returns: a pick, or a refusal as a value (raised only at the edge)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

from lb_service.strategies import Candidate, LoadRank, Strategy
from lb_service.strategies.base import Ranked


class RefusalKind(enum.Enum):
    """Why no agent was picked; the balancer turns each into one error."""

    NO_AGENTS = "no_agents"  # nothing registered and no candidates given
    NO_ELIGIBLE_AGENT = "no_eligible_agent"  # none meets the task, or all weigh 0
    ALL_BUSY = "all_busy"  # every eligible agent is at max_connections
    ALL_DRAINING = "all_draining"  # every eligible agent is draining (DrainAgent)
    ALL_SATURATED = "all_saturated"  # every eligible agent reports itself full (reports)


class Refusal(NamedTuple):
    """No pick, with a message a person can act on."""

    kind: RefusalKind
    message: str


class Decision(NamedTuple):
    """A pick before it is committed.

    ``compared`` are the candidates the strategy chose among with their load ranks
    (empty for a rule that does not rank by load): a shared store re-ranks them on the
    live loads at commit time. A NamedTuple: one is built per selection, in C.
    """

    choice: Candidate
    #: The session's binding answered.
    sticky: bool
    #: Bind (or rebind) the session to the pick.
    bind: bool
    compared: Sequence[tuple[Candidate, LoadRank]] = ()
    #: Every eligible agent was unhealthy, so they were picked among all the same.
    panic: bool = False


def conclude(
    strategy: Strategy, choice: Candidate | None, compared: Ranked, bind: bool, panic: bool = False
) -> Decision | Refusal:
    """The strategy's choice as a decision; none chosen (every weight 0) is a refusal."""
    if choice is None:
        return Refusal(
            RefusalKind.NO_ELIGIBLE_AGENT,
            f"every eligible agent has weight 0, so the {strategy.name.value} strategy "
            "picks none; raise a weight with UpdateWeights or change strategy",
        )
    # tuple.__new__: the NamedTuple without its generated __new__ (a Python call).
    return tuple.__new__(Decision, (choice, False, bind, compared, panic))

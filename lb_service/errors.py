"""The domain error tree; the service layer maps each leaf to one gRPC status code.

::

    LoadBalancerError
    ├── InvalidArgument          malformed input, or more candidates  INVALID_ARGUMENT
    │                            than max_candidates allows
    ├── NotFound                                                      NOT_FOUND
    │   ├── AgentNotFound        an agent id the service does not know
    │   └── LeaseNotFound        a request id that was never issued
    ├── LimitExceeded            a configured limit is reached        RESOURCE_EXHAUSTED
    │                            (max_agents, max_sessions, max_leases)
    ├── StoreUnavailable         the shared store (Redis) cannot be   UNAVAILABLE
    │                            reached in time; nothing was changed
    └── NoAgentAvailable         a pick that cannot be made
        ├── NoAgentsRegistered   nothing to pick from at all          UNAVAILABLE
        ├── NoEligibleAgent      no agent meets the task              FAILED_PRECONDITION
        ├── AllAgentsBusy        every eligible agent is at capacity  RESOURCE_EXHAUSTED
        ├── AllAgentsSaturated   every eligible agent reports itself  RESOURCE_EXHAUSTED
        │                        full (--refuse-when-saturated)
        └── AllAgentsDraining    every eligible agent is drained      UNAVAILABLE

Every message says what was wrong in words a person can act on; the service
passes it through unchanged as the status details.
"""

from __future__ import annotations


class LoadBalancerError(Exception):
    """Base of every error the core raises on purpose."""


class InvalidArgument(LoadBalancerError):
    """The input is malformed; nothing was changed.

    ``field`` is the path of the offending request field (``agent.port``,
    ``candidates[2].hardware.vram_gb``), or empty when the request as a whole is wrong.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class NotFound(LoadBalancerError):
    """Something named in the input does not exist."""


class AgentNotFound(NotFound):
    """An agent id the service does not know."""

    def __init__(self, agent_id: str, hint: str = "") -> None:
        super().__init__(f"unknown agent {agent_id!r}" + (f"; {hint}" if hint else ""))
        self.agent_id = agent_id


class LeaseNotFound(NotFound):
    """A request id that this service never issued."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"unknown request_id {request_id!r}: it was not issued by this service")
        self.request_id = request_id


class LimitExceeded(LoadBalancerError):
    """A configured limit (agents, sessions or leases) is reached; nothing was changed.

    The limits keep memory bounded whatever clients send; the message names the limit,
    its option and what to do about it.
    """


class StoreUnavailable(LoadBalancerError):
    """The shared store did not answer in time; the message names it. Retry later.

    Raised before anything changed or, for a call whose outcome is unknown (the
    connection broke after sending), with the message saying so.
    """


class NoAgentAvailable(LoadBalancerError):
    """A selection could not be made; counted as a failed selection."""


class NoAgentsRegistered(NoAgentAvailable):
    """There are no agents at all: none registered and no candidates given."""

    def __init__(self) -> None:
        super().__init__("no agents are registered; register one or pass candidates")


class NoEligibleAgent(NoAgentAvailable):
    """Agents exist but none meets the task; the message names the requirement."""


class AllAgentsBusy(NoAgentAvailable):
    """Eligible agents exist but every one is at its max_connections."""


class AllAgentsSaturated(NoAgentAvailable):
    """Every eligible agent's fresh load report says it is full, and the service refuses then."""


class AllAgentsDraining(NoAgentAvailable):
    """Eligible agents exist but every one is draining (DrainAgent); undrain one or add one."""

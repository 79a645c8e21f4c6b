"""Python clients for lb-service: blocking and asyncio, speaking in domain values.

::

    from lb_service.client import LoadBalancerClient

    with LoadBalancerClient("127.0.0.1:50051") as lb:
        with lb.acquire(model="llama3:8b", session_id="chat-42") as lease:
            answer = call_agent(lease.agent.host, lease.agent.port)

The names below are the public surface; the underscored modules may change.

Retrying an acquire: a SelectAgent with ``acquire=True`` that reached the server
but whose response was lost (the connection dropped) comes back as UNAVAILABLE and
is retried, which may open a second lease; the first is never ended by anyone and
expires after the server's request timeout, counted as a failed request. Ending a
lease by request id is idempotent, so a retried end never counts twice. Pass
``retry=RetryPolicy(attempts=1)`` where a briefly inflated load matters more than
riding out a blip.
"""

from __future__ import annotations

from lb_service.client._aio import AsyncLoadBalancerClient
from lb_service.client._channel import DEFAULT_TARGET, DEFAULT_TIMEOUT_S
from lb_service.client._errors import ClientError
from lb_service.client._lease import Lease
from lb_service.client._retry import RetryPolicy
from lb_service.client._sync import LoadBalancerClient

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "AsyncLoadBalancerClient",
    "ClientError",
    "Lease",
    "LoadBalancerClient",
    "RetryPolicy",
]

"""The client package's public surface is explicit and pinned."""

from __future__ import annotations

import lb_service.client


def test_client_names_are_pinned() -> None:
    """`lb_service.client.__all__` is exactly this list, and every name in it resolves."""
    assert sorted(lb_service.client.__all__) == [
        "AsyncLoadBalancerClient",
        "ClientError",
        "DEFAULT_TARGET",
        "DEFAULT_TIMEOUT_S",
        "Lease",
        "LoadBalancerClient",
        "RetryPolicy",
    ]
    assert all(hasattr(lb_service.client, name) for name in lb_service.client.__all__)


def test_defaults_are_the_documented_ones() -> None:
    """The default target is the server's default address, and the default deadline is 5 s."""
    assert lb_service.client.DEFAULT_TARGET == "127.0.0.1:50051"
    assert lb_service.client.DEFAULT_TIMEOUT_S == 5.0
    policy = lb_service.client.RetryPolicy()
    assert (policy.attempts, policy.initial_backoff_s, policy.multiplier, policy.max_backoff_s) == (
        4,
        0.05,
        2.0,
        1.0,
    )
